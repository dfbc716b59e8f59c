"""What decides whether `alignforge build` reuses a version: the inputs, the code that shapes
the data, --rebuild and --no-cache, through the CLI, on a tiny real model (its answers go
through the request cache, so what was reused shows in the manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import flows.build_run
from flows.cli import app
from tasks.config import DATA_DIR
from tasks.provenance import code_digest, source_digest
from tasks.release.store import DatasetStore
from tests.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("options")
    model = build_tiny_model(root / "tiny-model")
    profile = {
        "name": "tiny", "description": "tiny random model, MiniLM classifier", "source": "sample",
        "default_engine": {"backend": "transformers", "model": str(model), "device": "cpu", "batch_size": 16},
        "models": {"mistralai/Mistral-7B-Instruct-v0.3": {"backend": "embedding", "model": "packaged:minilm"}},
        "expansion_target": 0, "candidates_per_target": 1, "max_response_tokens": 4, "feedback_iterations": 0,
        "judge_mode": "choice", "classification_threshold": 0.05, "limit": 6, "shard_size": 6,
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(profile))
    spec = yaml.safe_load((DATA_DIR / "specs" / "culturax.yaml").read_text())
    spec["classification"]["require_label"] = []
    spec["responses"].update(judge_threshold=0.0, filters={
        "min_words": 0, "max_prompt_echo": 1.0, "min_english_share": 0.0, "near_duplicate_tau": 0,
        "refusal_rejected_for": [], "reject_truncated": False})
    (root / "culturax.yaml").write_text(yaml.safe_dump(spec))
    return {"spec": root / "culturax.yaml", "profile": root / "tiny.yaml"}


def build(files: dict[str, Path], home: Path, *options: str) -> dict:
    """Run `alignforge build`; the manifest of the version it printed."""
    result = CliRunner().invoke(app, ["build", str(files["spec"]), "--profile", str(files["profile"]),
                                      "--home", str(home), *options])
    assert result.exit_code == 0, result.output
    version_line = next(line for line in result.output.splitlines() if line.startswith("culturax version "))
    version = version_line.split()[2]
    manifest = json.loads((DatasetStore(home).path("culturax", version) / "manifest.json").read_text())
    return {**manifest, "reused": "reused (inputs unchanged)" in version_line}


def generator_usage(manifest: dict) -> dict:
    return next(m for m in manifest["models"] if "generator" in m["role"])


def test_rebuild_no_cache_and_code_changes_decide_what_is_reused(prefect_harness, tiny_build, tmp_path,
                                                                 monkeypatch) -> None:
    home = tmp_path / "home"
    first = build(tiny_build, home)
    assert not first["reused"] and generator_usage(first)["cache_hits"] == 0
    assert first["code_sha256"] == code_digest()

    again = build(tiny_build, home)
    assert again["reused"] and again["version"] == first["version"]

    rebuilt = build(tiny_build, home, "--rebuild")  # a new version; cached answers are reused
    assert not rebuilt["reused"] and rebuilt["version"] != first["version"]
    assert rebuilt["content_key"] == first["content_key"]
    assert generator_usage(rebuilt)["cache_hits"] == generator_usage(rebuilt)["requests"] > 0

    uncached = build(tiny_build, home, "--no-cache")  # nothing reused: every request runs again
    assert not uncached["reused"] and uncached["version"] not in (first["version"], rebuilt["version"])
    assert generator_usage(uncached)["cache_hits"] == 0 and generator_usage(uncached)["requests"] > 0

    monkeypatch.setattr(flows.build_run, "code_digest", lambda: "0" * 64)  # the code that shapes the data changed
    changed = build(tiny_build, home)
    assert not changed["reused"] and changed["content_key"] != first["content_key"]
    assert len(DatasetStore(home).list_versions("culturax")) == 4


def test_the_code_digest_follows_every_source_file_of_the_data_shaping_packages(tmp_path) -> None:
    for package in ("schemas", "tasks", "flows"):
        (tmp_path / package / "inner").mkdir(parents=True)
        (tmp_path / package / "inner" / "step.py").write_text("VALUE = 1\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "timing.py").write_text("RUNS = 3\n")
    before = source_digest(tmp_path)
    (tmp_path / "bench" / "timing.py").write_text("RUNS = 5\n")
    assert source_digest(tmp_path) == before  # benchmarks do not shape the data
    (tmp_path / "tasks" / "inner" / "step.py").write_text("VALUE = 2\n")
    changed = source_digest(tmp_path)
    assert changed != before
    (tmp_path / "tasks" / "inner" / "step.py").rename(tmp_path / "tasks" / "inner" / "moved.py")
    assert source_digest(tmp_path) != changed  # a renamed file is another code layout
