"""Smoke test: the dedup benchmark runs end to end in --quick mode."""

from __future__ import annotations

import json
from pathlib import Path

from bench.dedup_bench import main


def test_dedup_bench_quick(tmp_path: Path) -> None:
    output = tmp_path / "dedup.json"
    results = main(["--quick", "--output", str(output)])
    assert json.loads(output.read_text())["n"] == results["n"]
    rule = results["rule"]
    assert rule["deterministic"] and rule["recall_1_2_edits"] >= 0.9 and rule["precision"] >= 0.99
    assert rule["candidate_recall_1_2_edits"] >= rule["recall_1_2_edits"]
    assert set(rule["stages"]) == {"fingerprint", "word_counts", "candidates", "verify"}
    assert rule["recall_1_2_edits"] > results["before"]["recall_1_2_edits"]
    features = {row["features"]: row for row in results["features"]}
    assert features["word 1-grams, idf (chosen)"]["recall_r16"] >= features["word 1-grams, idf (chosen)"]["recall_r10"]
    assert {row["tau"] for row in results["main"]} == {3, 10}
    for row in results["main"]:
        assert row["sampled_recall_all_pairs"] >= 0.99
    for row in results["exact_recall"]:
        assert row["precision"] == 1.0 and row["recall"] >= 0.99
    assert len(results["minhash"]) == 3 and all(row["exponent"] >= 1.0 for row in results["minhash"])
    baselines = {row["method"]: row for row in results["baselines"]}
    assert baselines["simhash package, our feature hash"]["note"] == "fingerprints equal ours: True; pairs equal ours: True"
    assert baselines["ours simhash tau=3"]["speed_ratio_vs_ours"] == 1.0
    assert baselines["simhash package tau=3"]["n_measured"] == 1_000
    assert len(results["scaling"]) == 2
    leakage = {row["check"]: row for row in results["leakage"]}
    assert leakage["build's rule (fingerprints + words)"]["false_leaks"] == 0
    assert all(row["held_out"] == 380 and row["reference"] == 3440 for row in leakage.values())
