"""Stage I, last step: stratified train/test split, then the leakage check.

Assignment is deterministic: within each stratum (a dimension's label), prompts are
ordered by a seeded hash of their id and cut at counts apportioned from the spec's
fractions, so adding a prompt moves at most a cut point, not the order. Train items
within SimHash distance tau of a test item, or of a named held-out evaluation set, leave
train with the id they leak into.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from schemas.spec import DedupSpec
from tasks.core import StepContext, StepResult, make_rejects, stable_id
from tasks.dedup.near_duplicates import leaking_rows


@dataclass(frozen=True)
class HeldOut:
    """An evaluation set the build must not leak into: its texts and their fingerprints."""

    texts: Sequence[str]
    fingerprints: np.ndarray


@dataclass(frozen=True)
class LeakageReport:
    test_items: int
    test_items_leaking: int  # test items within tau of some train item, before train is cleaned
    heldout_items: int
    train_removed: int

    @property
    def rate(self) -> float:
        return self.test_items_leaking / self.test_items if self.test_items else 0.0


def assign_splits(prompt_ids: list[str], strata: list[str], fractions: dict[str, float], seed: int) -> list[str]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, stratum in enumerate(strata):
        groups[stratum].append(index)
    for members in groups.values():
        members.sort(key=lambda i: stable_id(seed, prompt_ids[i]))
    kept_for_train = 1 if fractions.get("train", 0) > 0 else 0  # every stratum keeps a training example
    taken = dict.fromkeys(groups, 0)
    assignment = ["train"] * len(prompt_ids)
    for name in sorted(name for name in fractions if name != "train"):
        capacity = {s: len(m) - kept_for_train - taken[s] for s, m in groups.items()}
        counts = _apportion({s: fractions[name] * len(m) for s, m in groups.items()}, capacity, seed)
        for stratum, count in counts.items():
            for i in groups[stratum][taken[stratum]:taken[stratum] + count]:
                assignment[i] = name
            taken[stratum] += count
    return assignment


def _apportion(shares: dict[str, float], capacity: dict[str, int], seed: int) -> dict[str, int]:
    """Whole counts per stratum that sum to ``round(sum(shares))`` as far as capacity allows
    (largest remainders): rounding each stratum alone would give small strata nothing, and
    a dataset of many small domains no test split at all.  Equal remainders are ordered by
    a seeded hash of the stratum, not its name."""
    counts = {s: min(math.floor(share), capacity[s]) for s, share in shares.items()}
    missing = round(sum(shares.values())) - sum(counts.values())
    by_remainder = sorted(shares, key=lambda s: (-(shares[s] - math.floor(shares[s])), stable_id(seed, s)))
    for stratum in by_remainder:
        if missing <= 0:
            break
        if counts[stratum] < capacity[stratum]:
            counts[stratum] += 1
            missing -= 1
    return counts


def split_prompts(table: pa.Table, context: StepContext, heldout: HeldOut | None = None) -> StepResult:
    """The spec's stratified split, with train items that leak into evaluation removed;
    the leakage report in `details`."""
    spec = context.spec
    result, leakage = split_and_check_leakage(table, spec.splits.fractions, spec.splits.stratify_by, spec.dedup,
                                              spec.seed, heldout)
    result.details["leakage"] = {"test_items": leakage.test_items, "test_items_leaking": leakage.test_items_leaking,
                                 "rate": leakage.rate, "heldout_items": leakage.heldout_items,
                                 "train_removed": leakage.train_removed}
    return result


def split_and_check_leakage(table: pa.Table, fractions: dict[str, float], stratify_by: str | None, dedup: DedupSpec,
                            seed: int, heldout: HeldOut | None = None) -> tuple[StepResult, LeakageReport]:
    ids = table["prompt_id"].to_pylist()
    strata = table[f"{stratify_by}_label"].to_pylist() if stratify_by else [""] * len(ids)
    splits = assign_splits(ids, [str(s) for s in strata], fractions, seed)
    table = table.append_column("split", pa.array(splits, pa.string()))
    fingerprints = table["simhash"].to_numpy(zero_copy_only=False).astype(np.uint64)
    is_train = np.array([s == "train" for s in splits])
    train_index = np.flatnonzero(is_train)
    other_index = np.flatnonzero(~is_train)

    # Which train items near-duplicate an evaluation item (test splits, held-out set)?
    texts = table["text"].to_pylist()
    train_texts, other_texts = [texts[i] for i in train_index], [texts[i] for i in other_index]
    nearest_test, _ = leaking_rows(train_texts, fingerprints[train_index], other_texts, fingerprints[other_index],
                                   dedup, seed)
    test_hits, _ = leaking_rows(other_texts, fingerprints[other_index], train_texts, fingerprints[train_index],
                                dedup, seed)
    heldout = heldout or HeldOut((), np.zeros(0, dtype=np.uint64))
    nearest_heldout, _ = leaking_rows(train_texts, fingerprints[train_index], heldout.texts, heldout.fingerprints,
                                      dedup, seed)

    rejects, keep = [], np.ones(len(ids), dtype=bool)
    for position, row in enumerate(train_index):
        if nearest_test[position] >= 0:
            related, detail = ids[other_index[nearest_test[position]]], "near-duplicate of a test item"
        elif nearest_heldout[position] >= 0:
            related, detail = f"heldout:{int(nearest_heldout[position])}", "near-duplicate of a held-out item"
        else:
            continue
        keep[row] = False
        rejects.append({"record_id": ids[row], "unit": "prompt", "stage": "split", "reason": "leakage",
                        "detail": detail, "related_id": related, "text": texts[row][:200]})
    report = LeakageReport(test_items=len(other_index), test_items_leaking=int((test_hits >= 0).sum()),
                           heldout_items=len(heldout.texts), train_removed=len(rejects))
    stats = {f"split_{name}": float(sum(s == name for s, k in zip(splits, keep, strict=True) if k)) for name in fractions}
    stats["leakage_rate"] = report.rate
    return StepResult(kept=table.filter(pa.array(keep)), rejects=make_rejects(rejects), stats=stats), report
