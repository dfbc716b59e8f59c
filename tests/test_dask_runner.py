"""Scale-out: the same build on a local Dask cluster of 2 worker processes gives the same
dataset, the same model usage in the manifest and the same budget stop as the default
thread runner (worker-side engines report their usage back with each shard)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flows.build import build_with_configured_runner
from tests.conftest import write_scripted_culturax

pytest.importorskip("prefect_dask")


def published_files(result: dict) -> dict[str, str]:
    manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
    return {entry["path"]: entry["sha256"] for entry in manifest["files"]}


def model_usage(result: dict) -> dict[str, tuple[int, int, int]]:
    manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
    return {model["role"]: (model["requests"], model["prompt_tokens"], model["completion_tokens"])
            for model in manifest["models"]}


def test_dask_build_equals_thread_build(prefect_harness, tmp_path: Path) -> None:
    files = write_scripted_culturax(tmp_path)
    small = yaml.safe_load(files["profile"].read_text()) | {"limit": 20}
    files["profile"].write_text(yaml.safe_dump(small, sort_keys=False))
    threads = build_with_configured_runner(str(files["spec"]), str(files["profile"]), home=str(tmp_path / "threads"))

    profile = yaml.safe_load(files["profile"].read_text())
    profile.update(task_runner="dask", dask_workers=2)
    dask_profile = tmp_path / "dask.yaml"
    dask_profile.write_text(yaml.safe_dump(profile, sort_keys=False))
    # The profile's name changes the content key, not the data: compare the files.
    dask = build_with_configured_runner(str(files["spec"]), str(dask_profile), home=str(tmp_path / "dask"))
    assert published_files(dask) == published_files(threads)
    assert model_usage(dask) == model_usage(threads)
    assert sum(requests for requests, _, _ in model_usage(dask).values()) > 0

    # A budget sees the workers' spend: both runners stop at the same shard boundary.
    stops = [build_with_configured_runner(str(files["spec"]), str(profile_path), home=str(tmp_path / home),
                                          max_requests=40)
             for profile_path, home in ((files["profile"], "threads-budget"), (dask_profile, "dask-budget"))]
    assert all(stop["version"] is None for stop in stops)
    assert stops[0]["stopped"] == stops[1]["stopped"] and stops[0]["spent"] == stops[1]["spent"]
