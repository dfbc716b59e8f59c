"""The README's demo as a newcomer runs it: `alignforge build culturax` on the local profile
(the packaged SmolLM2 and MiniLM), fresh data and Prefect homes, stdout a log. Minutes on
2 cores, so it is in the slow tier (`make test-slow`); `.ci/run` runs the demo itself too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from tasks.config import CODE_ROOT
from tasks.release.store import DatasetStore

pytestmark = pytest.mark.slow

STAGES = ("load", "classify", "dedup", "expand", "split", "respond", "publish")


def test_the_demo_builds_culturax_with_a_test_split_and_says_what_ran(tmp_path) -> None:
    home = tmp_path / "home"
    environment = {**os.environ, "PYTHONPATH": str(CODE_ROOT), "ALIGNFORGE_HOME": str(home),
                   "PREFECT_HOME": str(tmp_path / "prefect")}
    environment.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    demo = subprocess.run([sys.executable, "-m", "flows.cli", "build", "culturax"], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=3600)
    minutes = (time.monotonic() - started) / 60
    assert demo.returncode == 0, demo.stderr[-3000:]
    print(f"demo: {minutes:.1f} min, load average {os.getloadavg()}")
    for stage in STAGES:  # one line per stage in a log
        assert any(f"] {stage:<9} " in line and "done" in line for line in demo.stdout.splitlines()), stage

    store = DatasetStore(home)
    manifest = json.loads((store.path("culturax") / "manifest.json").read_text())
    assert manifest["splits"]["default"].get("test", 0) > 0
    default = pq.read_table(store.path("culturax") / "data" / "default").to_pylist()
    assert {row["generator_model"] for row in default} == {"meta-llama/Llama-3.1-8B-Instruct"}
    assert {row["generator_engine"] for row in default} == {"transformers:packaged:smollm2@unpinned"}
    card = (store.path("culturax") / "README.md").read_text()
    assert "source_datasets" not in card.split("---")[1]
    assert "the synthetic sample `data/samples/cultural_kaleidoscope.jsonl` bundled with alignforge" in card
