"""Smoke test: the dedup benchmark runs end to end in --quick mode."""

from __future__ import annotations

import json
from pathlib import Path

from bench.dedup_bench import main


def test_dedup_bench_quick(tmp_path: Path) -> None:
    output = tmp_path / "dedup.json"
    results = main(["--quick", "--output", str(output)])
    assert json.loads(output.read_text())["n"] == results["n"]
    assert {row["tau"] for row in results["main"]} == {3, 10}
    for row in results["main"]:
        assert 0.0 <= row["planted_recall"] <= 1.0
        assert row["planted_precision"] > 0.9
        assert row["sampled_recall_all_pairs"] >= 0.99
        assert row["fit_fingerprints_equal"]
    for row in results["exact_recall"]:
        assert row["precision"] == 1.0 and row["recall"] >= 0.99
    baselines = {row["method"]: row for row in results["baselines"]}
    assert baselines["simhash package, our feature hash"]["note"] == "fingerprints equal ours: True; pairs equal ours: True"
    assert baselines["ours simhash tau=3"]["speed_ratio_vs_ours"] == 1.0
    assert baselines["simhash package tau=3"]["n_measured"] == 1_000
    assert len(results["scaling"]) >= 1 and len(results["leakage"]) == 2
