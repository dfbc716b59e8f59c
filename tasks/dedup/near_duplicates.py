"""Stage I, SimHash: fingerprint prompts, drop near-duplicates, check leakage.

Global steps: they need every shard's fingerprints at once. Near-duplicates are SimHash
candidates confirmed on their words (``tasks.dedup.verify``); the representative of a
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
from tasks.dedup import fingerprint, index, minhash, verify
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


def verify_rule(spec: DedupSpec) -> verify.VerifyRule:
    return verify.VerifyRule(candidate_radius=spec.tau + spec.candidate_margin, short_text_words=spec.short_text_words,
                             short_text_radius=spec.short_text_radius, min_word_edits=spec.min_word_edits,
                             word_edit_share=spec.word_edit_share)


def describe_rule(spec: DedupSpec) -> str:
    """The near-duplicate rule in words, exactly as it runs (manifest and dataset card)."""
    if spec.method == "minhash":
        return (f"MinHash-LSH (datasketch, 128 permutations) over {spec.shingle} {spec.ngram}-grams: near-duplicates "
                f"at estimated Jaccard similarity >= {spec.minhash_threshold}")
    rule = verify_rule(spec)
    return (
        f"{spec.bits}-bit SimHash over {spec.shingle} {spec.ngram}-grams weighted by {spec.weighting}. Two prompts are "
        f"near-duplicates when their fingerprints are within Hamming distance {rule.candidate_radius} (tau {spec.tau} + "
        f"{spec.candidate_margin}), or within {rule.short_text_radius} when the shorter prompt has at most "
        f"{rule.short_text_words} words (each search misses a pair at its radius with probability "
        f"{verify.MISS_PROBABILITY:g}), and the longer prompt's word count minus the words both share (counted with "
        f"multiplicity; words lowercased, NFKC, punctuation removed) is at most max({rule.min_word_edits}, "
        f"floor({rule.word_edit_share:g} x the longer prompt's word count)). The split's leakage check compares "
        f"fingerprints alone: within Hamming distance tau = {spec.tau}"
    )


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


def near_duplicate_pairs(table: pa.Table, texts: list[str], spec: DedupSpec, seed: int) -> np.ndarray:
    """Near-duplicate row pairs of ``table`` (whose texts are ``texts``) under the spec's rule."""
    if table.num_rows < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if spec.method == "minhash":
        return minhash.minhash_near_duplicate_pairs(
            texts, threshold=spec.minhash_threshold, config=fingerprint_config(spec), seed=seed
        )
    fingerprints = table["simhash"].to_numpy(zero_copy_only=False).astype(np.uint64)
    return verify.verified_pairs(texts, fingerprints, verify_rule(spec), seed=seed)[0]


def remove_near_duplicates(table: pa.Table, spec: DedupSpec, seed: int, stage: str = "dedup") -> StepResult:
    """Keep one representative per near-duplicate cluster; the rest leave with its id."""
    texts = table["text"].to_pylist()
    pairs = near_duplicate_pairs(table, texts, spec, seed)
    representative = index.cluster_keep(table.num_rows, pairs, keep_priority(table))
    keep = representative == np.arange(table.num_rows)
    ids = table["prompt_id"].to_pylist()
    removed = np.flatnonzero(~keep)
    details = _removal_details(table, texts, spec, np.stack((removed, representative[removed]), axis=1))
    rejects = [
        {"record_id": ids[i], "unit": "prompt", "stage": stage, "reason": "near_duplicate", "detail": detail,
         "related_id": ids[r], "text": texts[i][:200]}
        for (i, r), detail in zip(zip(removed.tolist(), representative[removed].tolist()), details)
    ]
    return StepResult(
        kept=table.filter(pa.array(keep)), rejects=make_rejects(rejects),
        stats={"pairs": len(pairs), "clusters_merged": int((~keep).sum())},
    )


def _removal_details(table: pa.Table, texts: list[str], spec: DedupSpec, pairs: np.ndarray) -> list[str]:
    """How far each removed row is from its cluster's representative (through the cluster,
    so possibly further than one pair's rule allows)."""
    if spec.method == "minhash":
        return [f"minhash jaccard >= {spec.minhash_threshold}"] * len(pairs)
    fingerprints = table["simhash"].to_numpy(zero_copy_only=False).astype(np.uint64)
    bits = fingerprint.hamming(fingerprints[pairs[:, 0]], fingerprints[pairs[:, 1]])
    words = verify.bag_distance(texts, pairs)
    return [f"simhash hamming {b}, word-bag distance {w}" for b, w in zip(bits.tolist(), words.tolist())]


def deduplicate(table: pa.Table, context: StepContext) -> StepResult:
    """The dedup step: fingerprint every prompt with the build's fingerprinter, then keep one
    representative per near-duplicate cluster."""
    spec = context.spec
    return remove_near_duplicates(with_fingerprints(table, context.fingerprinter), spec.dedup, spec.seed)


def leaking_rows(query_texts: Sequence[str], query_fps: np.ndarray, reference_texts: Sequence[str],
                 reference_fps: np.ndarray, spec: DedupSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the reference row it near-duplicates under the dedup step's own
    rule (SimHash candidates confirmed on words), -1 where none; and their word-bag distance.
    Fingerprints alone at tau would flag unrelated prompts that share common words."""
    return verify.nearest_verified(query_texts, reference_texts, query_fps, reference_fps, verify_rule(spec), seed=seed)
