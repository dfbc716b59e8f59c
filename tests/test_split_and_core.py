"""Splitting with the leakage check, and the step runner's row accounting."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from schemas.records import REJECT_SCHEMA, prompt_schema
from tasks.core import RowAccountingError, StepResult, make_rejects, run_step
from schemas.spec import DedupSpec
from tasks.stage1.split import HeldOut, assign_splits, split_and_check_leakage


def test_assignment_is_stratified_deterministic_and_stable() -> None:
    ids = [f"p{i}" for i in range(100)]
    strata = ["A"] * 50 + ["B"] * 50
    first = assign_splits(ids, strata, {"train": 0.8, "test": 0.2}, seed=42)
    assert first == assign_splits(ids, strata, {"train": 0.8, "test": 0.2}, seed=42)
    assert first[:50].count("test") == 10 and first[50:].count("test") == 10
    # Adding a prompt never moves the others.
    grown = assign_splits(ids + ["p100"], strata + ["A"], {"train": 0.8, "test": 0.2}, seed=42)
    moved = sum(a != b for a, b in zip(first, grown[:100]))
    assert moved <= 1


def test_singleton_strata_stay_in_train() -> None:
    assert assign_splits(["a"], ["rare"], {"train": 0.5, "test": 0.5}, seed=1) == ["train"]


def test_many_small_strata_still_give_the_test_fraction() -> None:
    """30 domains of 3 prompts at 10 % test: rounding per domain would give no test item."""
    ids = [f"p{i}" for i in range(90)]
    strata = [f"domain{i // 3}" for i in range(90)]
    splits = assign_splits(ids, strata, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=3)
    assert splits.count("test") == 9 and splits.count("validation") == 9
    for domain in set(strata):
        members = [split for split, stratum in zip(splits, strata) if stratum == domain]
        assert "train" in members  # every domain keeps a training example
    other_seed = assign_splits(ids, strata, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=4)
    assert {s for s, split in zip(strata, splits) if split == "test"} != {
        s for s, split in zip(strata, other_seed) if split == "test"}  # ties are not broken by name


def table_with(fingerprints: list[int], labels: list[str]) -> pa.Table:
    rows = [{"prompt_id": f"p{i}", "text": f"text {i}", "origin": "source", "parent_ids": [], "simhash": fp,
             "cultural_label": label} for i, (fp, label) in enumerate(zip(fingerprints, labels))]
    return pa.Table.from_pylist(rows, schema=prompt_schema(["cultural"]))


def test_train_items_near_test_or_heldout_items_are_removed() -> None:
    ids = [f"p{i}" for i in range(40)]
    splits = assign_splits(ids, ["A"] * 40, {"train": 0.5, "test": 0.5}, 7)
    train = [i for i, s in enumerate(splits) if s == "train"]
    test = [i for i, s in enumerate(splits) if s == "test"]
    rng = np.random.default_rng(0)
    fingerprints = [int(x) for x in rng.integers(0, 2**63, size=40, dtype=np.int64)]
    fingerprints[train[0]] = fingerprints[test[0]] ^ 0b111  # leaks into a test item at distance 3
    # leaks into the held-out set: one bit and one word apart
    heldout = HeldOut([f"text {train[1]} again"], np.array([fingerprints[train[1]] ^ 1], dtype=np.uint64))
    table = table_with(fingerprints, ["A"] * 40)
    result, report = split_and_check_leakage(table, {"train": 0.5, "test": 0.5}, "cultural", DedupSpec(tau=3),
                                             seed=7, heldout=heldout)
    assert sorted(result.rejects["record_id"].to_pylist()) == sorted([ids[train[0]], ids[train[1]]])
    assert dict(zip(result.rejects["record_id"].to_pylist(), result.rejects["related_id"].to_pylist())) == {
        ids[train[0]]: ids[test[0]], ids[train[1]]: "heldout:0"}
    assert report.test_items == len(test) and report.test_items_leaking == 1
    assert report.rate == pytest.approx(1 / len(test))
    assert result.kept.num_rows == 38 and result.kept["split"].to_pylist().count("test") == len(test)


def test_run_step_catches_lost_rows() -> None:
    table = pa.table({"prompt_id": ["a", "b", "c"]})

    def loses_a_row(t, context):
        return StepResult(kept=t.slice(0, 1), rejects=make_rejects([
            {"record_id": "b", "unit": "prompt", "stage": "x", "reason": "bad"}]))

    with pytest.raises(RowAccountingError, match="3 prompts in, 1 kept \\+ 1 rejected"):
        run_step("x", loses_a_row, table, context=None)


def test_run_step_checks_candidates_and_reports_reasons() -> None:
    table = pa.table({"prompt_id": ["a"]})

    def generates(t, context):
        rejects = make_rejects([{"record_id": "r1", "unit": "candidate", "stage": "x", "reason": "empty"}])
        return StepResult(kept=t, rejects=rejects, candidates_generated=2, candidates_kept=1)

    result, report = run_step("x", generates, table, context=None)
    assert report.rejected == 0 and report.rejected_by_reason == {}
    assert report.candidates_rejected_by_reason == {"empty": 1}

    def miscounts(t, context):
        return StepResult(kept=t, rejects=REJECT_SCHEMA.empty_table(), candidates_generated=2, candidates_kept=1)

    with pytest.raises(RowAccountingError, match="candidates"):
        run_step("x", miscounts, table, context=None)
