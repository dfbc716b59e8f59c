"""Stage I, SimHash: fingerprint prompts, drop near-duplicates, check leakage.

Global steps: they need every shard's fingerprints at once. The representative of a
near-duplicate cluster is chosen deterministically: a source row before a generated
one, then the lowest prompt id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from schemas.records import ORIGIN_SOURCE
from schemas.spec import DedupSpec
from tasks.dedup import fingerprint, index, minhash
from tasks.dedup.features import FingerprintConfig, IdfTable
from tasks.core import StepContext, StepResult, make_rejects


@dataclass(frozen=True)
class Fingerprinter:
    """Fingerprints with one IDF table, so prompts fingerprinted later (expansion,
    held-out sets) live in the same space as the corpus the IDF came from.  The corpus's
    own fingerprints come from the same pass as the table."""

    config: FingerprintConfig
    idf: IdfTable | None
    fitted_texts: tuple[str, ...] = ()
    fitted_fingerprints: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))

    @classmethod
    def fit(cls, texts: Sequence[str], spec: DedupSpec) -> Fingerprinter:
        config, texts = fingerprint_config(spec), tuple(texts)
        if config.weighting != "idf":
            return cls(config, None, texts, fingerprint.fingerprints(texts, config))
        table, fitted = fingerprint.fit_and_fingerprint(texts, config)
        return cls(config, table, texts, fitted)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if tuple(texts) == self.fitted_texts:
            return self.fitted_fingerprints.copy()
        return fingerprint.fingerprints(list(texts), self.config, idf=self.idf)


def fingerprint_config(spec: DedupSpec) -> FingerprintConfig:
    return FingerprintConfig(bits=spec.bits, shingle=spec.shingle, ngram=spec.ngram, weighting=spec.weighting)


def with_fingerprints(table: pa.Table, fingerprinter: Fingerprinter) -> pa.Table:
    values = fingerprinter(table["text"].to_pylist())
    column = table.schema.get_field_index("simhash")
    return table.set_column(column, table.schema.field("simhash"), pa.array(values, type=pa.uint64()))


def keep_priority(table: pa.Table) -> np.ndarray:
    """Rank rows so that source rows come before generated ones, then by prompt id."""
    origins = table["origin"].to_pylist()
    ids = table["prompt_id"].to_pylist()
    order = sorted(range(len(ids)), key=lambda i: (origins[i] != ORIGIN_SOURCE, ids[i]))
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids))
    return rank


def near_duplicate_pairs(table: pa.Table, spec: DedupSpec, seed: int) -> np.ndarray:
    if table.num_rows < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if spec.method == "minhash":
        return minhash.minhash_near_duplicate_pairs(
            table["text"].to_pylist(), threshold=spec.minhash_threshold, config=fingerprint_config(spec), seed=seed
        )
    fingerprints = table["simhash"].to_numpy(zero_copy_only=False).astype(np.uint64)
    return index.near_duplicate_pairs(fingerprints, spec.tau, seed=seed)


def remove_near_duplicates(table: pa.Table, spec: DedupSpec, seed: int, stage: str = "dedup") -> StepResult:
    """Keep one representative per near-duplicate cluster; the rest leave with its id."""
    pairs = near_duplicate_pairs(table, spec, seed)
    representative = index.cluster_keep(table.num_rows, pairs, keep_priority(table))
    keep = representative == np.arange(table.num_rows)
    ids = table["prompt_id"].to_pylist()
    texts = table["text"].to_pylist()
    fingerprints = table["simhash"].to_numpy(zero_copy_only=False).astype(np.uint64)
    rejects = [
        {"record_id": ids[i], "unit": "prompt", "stage": stage, "reason": "near_duplicate",
         "detail": f"{spec.method} hamming {int(fingerprint.hamming(fingerprints[i:i + 1], fingerprints[r:r + 1])[0])}"
         if spec.method == "simhash" else f"minhash jaccard >= {spec.minhash_threshold}",
         "related_id": ids[r], "text": texts[i][:200]}
        for i, r in enumerate(representative) if i != r
    ]
    return StepResult(
        kept=table.filter(pa.array(keep)), rejects=make_rejects(rejects),
        stats={"pairs": len(pairs), "clusters_merged": int((~keep).sum())},
    )


def deduplicate(table: pa.Table, context: StepContext) -> StepResult:
    """The dedup step: fingerprint every prompt with the build's fingerprinter, then keep one
    representative per near-duplicate cluster."""
    spec = context.spec
    return remove_near_duplicates(with_fingerprints(table, context.fingerprinter), spec.dedup, spec.seed)


def leaking_rows(candidates: np.ndarray, reference: np.ndarray, tau: int) -> tuple[np.ndarray, np.ndarray]:
    """For each candidate fingerprint, the closest reference within tau (-1 if none) and its distance."""
    if len(candidates) == 0 or len(reference) == 0:
        return np.full(len(candidates), -1, dtype=np.int64), np.full(len(candidates), -1, dtype=np.int64)
    return index.nearest_within(candidates, reference, tau)
