"""Shared fixtures: an isolated data home, and step contexts over scripted engines."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see flows/cli.py

from schemas.profile import EngineConfig, Profile
from schemas.spec import DatasetSpec, DimensionSpec, ExpansionSpec, RealSource, ResponseSpec, RoleModels, SourceSpec
from tasks.config import DATA_DIR, PROMPTS_DIR, apply_profile, load_spec, taxonomies_for
from tasks.core import StepContext
from tasks.engines.base import ChatRequest, Completion, Engine
from tasks.prompts import PromptLibrary

TEST_PROFILE = Profile(name="test", description="scripted engines",
                       default_engine=EngineConfig(backend="scripted"))


class CallbackEngine(Engine):
    """Answers each request with `answer(request)`; remembers every batch it was sent."""

    backend = "test"

    def __init__(self, model_id: str, answer: Callable[[ChatRequest], Completion]) -> None:
        super().__init__(model_id)
        self.answer = answer
        self.batches: list[list[ChatRequest]] = []

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        self.batches.append(list(requests))
        return [self.answer(request) for request in requests]


def inline_spec(dimensions: Sequence[str], models: RoleModels, responses: ResponseSpec) -> DatasetSpec:
    """A dataset spec built in memory for step tests: only dimensions, models and responses vary."""
    return DatasetSpec(
        name="test", title="Test", description="step test spec", paper="p", license="cc-by-4.0",
        source=SourceSpec(name="src", real=RealSource(hub_id="org/data", license="mit"), sample="data/samples/none.jsonl",
                          format="jsonl", text_column="text"),
        dimensions=tuple(DimensionSpec(name=d, taxonomy=d) for d in dimensions),
        models=models,
        expansion=ExpansionSpec(dimension=dimensions[0]),
        responses=responses,
    )


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for every flow test of the session: it takes seconds to start."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("ALIGNFORGE_HOME", str(folder))
    return folder


def make_context(spec_name: str, engines: Callable[[str, str], Engine] | Engine, profile: Profile = TEST_PROFILE,
                 **spec_updates) -> StepContext:
    """A StepContext for `spec_name` whose every role answers from `engines`."""
    spec = apply_profile(load_spec(spec_name), profile)
    if spec_updates:
        spec = spec.model_copy(update=spec_updates)
    provider = engines if callable(engines) and not isinstance(engines, Engine) else (lambda role, model: engines)
    return StepContext(spec=spec, profile=profile, taxonomies=taxonomies_for(spec), prompts=PromptLibrary(PROMPTS_DIR),
                       engines=provider, logger=logging.getLogger("test"))


@pytest.fixture
def context_for() -> Callable[..., StepContext]:
    return make_context


# Scripted answers by a fragment of the last user message; the first fragment that matches wins.
SCRIPTED_CLASSIFIER = {"festival": "Festivals", "Festival": "Festivals", "dance": "Dance", "food": "Culinary Arts",
                       "dish": "Culinary Arts", "language": "Language", "": "Crafts"}
SCRIPTED_WRITER = {"Criteria:": "9", "Domain:": "Which crafts are taught to children in rural Oaxaca workshops?",
                   "": "A careful answer that explains the custom, its history and how visitors can respect it."}


def write_scripted_culturax(root: Path, engine: dict[str, Any] | None = None) -> dict[str, Path]:
    """A CULTURAX spec and a profile whose every role answers from scripts: a whole build in
    seconds, deterministic. `engine` replaces the scripted engine config (e.g. an HTTP one)."""
    classifier = engine or {"backend": "scripted", "scripted_answers": SCRIPTED_CLASSIFIER}
    writer = engine or {"backend": "scripted", "scripted_answers": SCRIPTED_WRITER}
    profile = {"name": "scripted", "description": "scripted engines", "source": "sample",
               "default_engine": writer, "models": {"mistralai/Mistral-7B-Instruct-v0.3": classifier},
               "expansion_target": 3, "max_expansion_rounds": 2, "candidates_per_target": 2,
               "feedback_iterations": 1, "limit": 60, "shard_size": 4}
    (root / "scripted.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))  # answer order matters
    spec = yaml.safe_load((DATA_DIR / "specs" / "culturax.yaml").read_text())
    spec["responses"]["filters"] = {"near_duplicate_tau": 0}
    (root / "culturax.yaml").write_text(yaml.safe_dump(spec))
    return {"profile": root / "scripted.yaml", "spec": root / "culturax.yaml", "root": root}


PERMISSIVE_RESPONSE_FILTERS = {"min_words": 0, "max_prompt_echo": 1.0, "min_english_share": 0.0, "near_duplicate_tau": 0,
                               "refusal_rejected_for": [], "reject_truncated": False}


def write_tiny_culturax(root: Path, profile: dict[str, Any], *, require_labels: bool = True) -> dict[str, Path]:
    """A CULTURAX spec and a profile on the tiny random model (built under `root`) with the
    MiniLM classifier; `profile` holds its name and the knobs a test sets. Random weights
    write nonsense, so the spec lets every response through its judge and filters."""
    from tests.tiny_model import build_tiny_model

    model = build_tiny_model(root / "tiny-model")
    batch_size = profile.pop("batch_size", 16)
    profile = {
        "description": "tiny random model, MiniLM classifier", "source": "sample",
        "default_engine": {"backend": "transformers", "model": str(model), "device": "cpu", "batch_size": batch_size},
        "models": {"mistralai/Mistral-7B-Instruct-v0.3": {"backend": "embedding", "model": "packaged:minilm"}},
        "judge_mode": "choice", **profile,
    }
    (root / f"{profile['name']}.yaml").write_text(yaml.safe_dump(profile))
    spec = yaml.safe_load((DATA_DIR / "specs" / "culturax.yaml").read_text())
    if not require_labels:
        spec["classification"]["require_label"] = []
    spec["responses"].update(judge_threshold=0.0, filters=PERMISSIVE_RESPONSE_FILTERS)
    (root / "culturax.yaml").write_text(yaml.safe_dump(spec))
    return {"spec": root / "culturax.yaml", "profile": root / f"{profile['name']}.yaml", "root": root}

