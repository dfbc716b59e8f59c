"""Kill -9 at several points of a build: no half-written version ever becomes visible, the
next run completes, and the final dataset equals an uninterrupted run's row for row.

Builds run in subprocesses on scripted engines (fast and deterministic), as plain Python
(no Prefect server), in small shards so that kills land between and inside stages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.config import PROJECT_ROOT
from tasks.release.store import DatasetStore
from tests.conftest import write_scripted_culturax

SCRIPT = """
import sys
from flows.build import run_build
result = run_build(sys.argv[1], sys.argv[2], home=sys.argv[3])
print(result["version"])
"""


@pytest.fixture(scope="module")
def scripted_build(tmp_path_factory) -> dict[str, Path]:
    return write_scripted_culturax(tmp_path_factory.mktemp("crash"))


def start_build(files: dict[str, Path], home: Path) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "ALIGNFORGE_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(files["spec"]), str(files["profile"]), str(home)],
                            cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished_shards(home: Path) -> int:
    return sum(1 for _ in home.glob("culturax/.work/*/*/shard-*/report.json"))


def kill_after(files: dict[str, Path], home: Path, shards: int, timeout: float = 120) -> bool:
    """Start a build and SIGKILL it once `shards` shard checkpoints exist; False if it finished first."""
    process = start_build(files, home)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if finished_shards(home) >= shards:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    process.communicate(timeout=timeout)
    return False


def version_tables(home: Path) -> dict[str, list[dict]]:
    store = DatasetStore(home)
    version = store.latest("culturax")
    store.verify("culturax", version)
    folder = store.path("culturax", version)
    tables = {}
    for path in sorted(folder.rglob("*.parquet")):
        table = pq.read_table(path)
        key = "prompt_id" if "prompt_id" in table.column_names else table.column_names[0]
        tables[str(path.relative_to(folder))] = sorted(table.to_pylist(), key=lambda row: str(row[key]))
    return tables


def visible_versions(home: Path) -> list[str]:
    return [p.name for p in (home / "culturax").iterdir() if p.is_dir() and not p.name.startswith(".")] \
        if (home / "culturax").is_dir() else []


def test_killed_builds_resume_to_the_uninterrupted_result(scripted_build, tmp_path) -> None:
    reference_home = tmp_path / "reference"
    reference = start_build(scripted_build, reference_home)
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    expected = version_tables(reference_home)
    assert any(name.startswith("data/default/") for name in expected)

    home = tmp_path / "killed"
    kills = 0
    for shards in (1, 4, 9, 15):
        if kill_after(scripted_build, home, shards):
            kills += 1
            # A killed build never leaves a visible version behind.
            assert visible_versions(home) == []
    assert kills >= 2, "the build finished before the kills could land; shards too large"
    resumed = start_build(scripted_build, home)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert len(visible_versions(home)) == 1
    assert version_tables(home) == expected
    manifest = json.loads((DatasetStore(home).path("culturax") / "manifest.json").read_text())
    reference_manifest = json.loads((DatasetStore(reference_home).path("culturax") / "manifest.json").read_text())
    assert manifest["content_key"] == reference_manifest["content_key"]
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {
        f["path"]: f["sha256"] for f in reference_manifest["files"]}
    # The resumed manifest counts the models of the whole build, from the saved shards too.
    def engines(m: dict) -> dict[str, tuple[str, int]]:
        return {use["engine"]: (use["role"], use["requests"]) for use in m["models"]}

    resumed_engines, reference_engines = engines(manifest), engines(reference_manifest)
    assert {e: role for e, (role, _) in resumed_engines.items()} == {e: role for e, (role, _) in reference_engines.items()}
    for engine, (_, requests) in reference_engines.items():
        assert resumed_engines[engine][1] >= requests, engine  # killed shards' work is redone, never lost
    assert sum(stage["reused_shards"] for stage in manifest["stages"]) > 0
