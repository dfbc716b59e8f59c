"""Shared engine fixtures: the tiny local model, and engines on it that load once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.engines.transformers_backend import TransformersEngine
from tests.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path) -> Iterator[TransformersEngine]:
    engine = TransformersEngine(str(tiny_model_dir), batch_size=4, device="cpu")
    yield engine
    engine.close()



@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a Gemma-style chat template: it raises on a system turn."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gemma"), style="gemma")
