"""Near-duplicate / leakage benchmark (``tasks.dedup``) on a realistic planted corpus.

    python -m bench.dedup_bench            # 400,000 prompts (several minutes on 2 cores)
    python -m bench.dedup_bench --quick    # tiny smoke run (seconds)

The corpus (``bench/near_duplicate_corpus.py``): 30,000 Zipf-ranked pseudo-words, prompts
of 10-60 words, 10% 1-2-word edits and 2% exact copies of an original.  Reported:

* the build's rule (``DedupSpec()``: fingerprints, candidates, word check), wall and CPU
  seconds per stage, recall per edit count and per length band, and precision; the build
  before this rule (word bigrams, Hamming <= 10) on the same corpus;
* features chosen by measurement: per fingerprint variant, the share of planted edits
  within each radius and the expected number of unrelated pairs there;
* the exact index (unchanged): plain joins at tau 3 and 10 against brute force;
* datasketch MinHash-LSH, the second method, at two subset sizes with a power-law
  extrapolation, and the ``simhash`` package on a subset;
* scaling, and leakage at scale: 38k held-out prompts against 344k (the split's check on
  fingerprints, and the build's rule across the two sets).

Results are printed and written to ``bench/results/dedup.json``; every timed block records
the load average, since wall time on a shared machine includes everything else running.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import simhash as simhash_package

from bench.near_duplicate_corpus import Corpus, make_corpus, planted_recall
from schemas.spec import DedupSpec
from tasks.dedup.features import FingerprintConfig, feature_hash
from tasks.dedup.fingerprint import fingerprints, fit_and_fingerprint, hamming
from tasks.dedup.index import near_duplicate_pairs, nearest_within, pairs_array
from tasks.dedup.minhash import minhash_near_duplicate_pairs
from tasks.dedup.near_duplicates import fingerprint_config, verify_rule
from tasks.dedup.reference import compute_idf, weighted_shingles
from tasks.dedup.verify import candidate_pairs, confirm_on_words, nearest_verified, word_counts

RESULTS_PATH = Path(__file__).parent / "results" / "dedup.json"
TAUS = (3, 10)
BEFORE = FingerprintConfig(ngram=2)  # the build's fingerprints before the word check, joined at tau 10
FEATURE_VARIANTS = {
    "word 2-grams, idf (before)": BEFORE,
    "word 1-grams, idf (chosen)": FingerprintConfig(ngram=1),
    "word 1-grams, tf": FingerprintConfig(ngram=1, weighting="tf"),
    "char 3-grams, idf": FingerprintConfig(shingle="char", ngram=3),
    "char 4-grams, idf": FingerprintConfig(shingle="char", ngram=4),
}
RADII = (10, 12, 14, 16)
MINHASH_VARIANTS = ((2, 0.8), (1, 0.8), (1, 0.6))  # (word n-gram, Jaccard threshold); (2, 0.8) the spec's default before
RECALL_COLUMNS = ["recall_0_edit", "recall_1_edit", "recall_2_edit", "recall_10_19_words", "recall_20_39_words",
                  "recall_40_60_words", "recall_1_2_edits", "pairs", "unrelated_pairs", "precision"]


# ---------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------

class PeakMemory:
    """Peak resident-memory growth (MiB) over a block: Linux VmHWM reset via clear_refs,
    else tracemalloc (which only sees Python/numpy allocations and slows the block)."""

    def __enter__(self) -> PeakMemory:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._start = self._status_kib("VmRSS")
            self._tracing = False
        except OSError:
            tracemalloc.start()
            self._tracing = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tracing:
            self.mib = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        else:
            self.mib = (self._status_kib("VmHWM") - self._start) / 1024

    @staticmethod
    def _status_kib(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise OSError(field)


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def measured(function: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Result, wall and CPU seconds (all threads of this process), and the 1-minute load
    average before the block."""
    load, cpu_start = os.getloadavg()[0], time.process_time()
    result, wall = timed(function)
    return result, {"wall_s": wall, "cpu_s": time.process_time() - cpu_start, "load": load}


def as_pair_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, pairs.tolist()))


def pair_set_array(pairs: set[tuple[int, int]], n: int) -> np.ndarray:
    array = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return pairs_array(array[:, 0], array[:, 1], n)


def precision_recall(found: set, truth: set) -> tuple[float, float]:
    hits = len(found & truth)
    return (hits / len(found) if found else 1.0), (hits / len(truth) if truth else 1.0)


def brute_force_pairs(fps: np.ndarray, taus: Sequence[int], block: int = 256) -> dict[int, set]:
    """Exact all-pairs within each tau, vectorised in row blocks (upper triangle)."""
    found: dict[int, list[np.ndarray]] = {tau: [] for tau in taus}
    for start in range(0, len(fps), block):
        rows = fps[start:start + block]
        distance = hamming(rows[:, None], fps[None, start:])
        for tau in taus:
            i, j = np.nonzero(distance <= tau)
            upper = start + i < start + j
            found[tau].append(np.stack((start + i[upper], start + j[upper]), axis=1))
    return {tau: as_pair_set(np.concatenate(parts)) for tau, parts in found.items()}


def sampled_recall(fps: np.ndarray, pairs: np.ndarray, tau: int, rng: np.random.Generator, rows: int) -> float:
    """Recall over every pair that touches ``rows`` random rows, found by brute force
    against the whole set: an unbiased recall estimate at full size."""
    sample = np.sort(rng.choice(len(fps), size=min(rows, len(fps)), replace=False))
    truth: set[tuple[int, int]] = set()
    for start in range(0, len(sample), 32):  # 32 x n distances per block bounds memory
        query = sample[start:start + 32]
        q, r = np.nonzero(hamming(fps[query][:, None], fps[None, :]) <= tau)
        q = query[q]
        truth.update((min(a, b), max(a, b)) for a, b in zip(q.tolist(), r.tolist()) if a != b)
    if not truth:
        return 1.0
    in_sample = np.isin(pairs, sample).any(axis=1)
    return len(truth & as_pair_set(pairs[in_sample])) / len(truth)


# ---------------------------------------------------------------------------
# The build's rule, and the build before it
# ---------------------------------------------------------------------------

def bench_rule(corpus: Corpus, spec: DedupSpec, repeats: int) -> dict:
    """The dedup step's work on the whole corpus, ``repeats`` times (stage times are the
    run with the median total): fit the idf table with the fingerprints, count words, find
    candidates, confirm them on words."""
    config, rule, texts = fingerprint_config(spec), verify_rule(spec), corpus.texts
    runs = []
    for run in range(repeats):
        with PeakMemory() as memory:
            (_, fps), fingerprint_time = measured(lambda: fit_and_fingerprint(texts, config))
            n_words, words_time = measured(lambda: word_counts(texts))
            candidates, candidates_time = measured(lambda: candidate_pairs(fps, n_words, rule))
            (pairs, _), verify_time = measured(lambda: confirm_on_words(texts, candidates, n_words, rule))
        stages = {"fingerprint": fingerprint_time, "word_counts": words_time, "candidates": candidates_time,
                  "verify": verify_time}
        runs.append({"stages": stages, "total_wall_s": sum(t["wall_s"] for t in stages.values()),
                     "total_cpu_s": sum(t["cpu_s"] for t in stages.values()), "peak_mib": memory.mib,
                     "load_end": os.getloadavg()[0], "pairs": pairs, "candidates": len(candidates),
                     "candidate_recall_1_2_edits": planted_recall(corpus, candidates)["recall_1_2_edits"]})
    median = sorted(runs, key=lambda r: r["total_wall_s"])[len(runs) // 2]
    return {
        "n": len(texts), "rule": rule.__dict__, "config": config.__dict__, "repeats": repeats,
        "deterministic": all(np.array_equal(r["pairs"], runs[0]["pairs"]) for r in runs),
        "runs_total_wall_s": [r["total_wall_s"] for r in runs], "runs_total_cpu_s": [r["total_cpu_s"] for r in runs],
        **{key: value for key, value in median.items() if key != "pairs"},
        **planted_recall(corpus, median["pairs"]),
    }


def bench_before(corpus: Corpus) -> dict:
    """The build before the word check: word bigrams, idf, plain index at Hamming <= 10."""
    fps, fingerprint_time = measured(lambda: fingerprints(corpus.texts, BEFORE))
    pairs, index_time = measured(lambda: near_duplicate_pairs(fps, 10))
    return {"method": "before: word 2-grams idf, hamming <= 10", "fingerprint": fingerprint_time, "index": index_time,
            **planted_recall(corpus, pairs)}


def bench_features(corpus: Corpus, samples: int) -> list[dict]:
    """Per fingerprint variant: the share of planted 1-2-word edits within each radius
    (what a plain join at that radius finds) and the expected number of unrelated pairs
    within it, among pairs whose lengths differ by <= 2 words (which no length filter
    removes), estimated from ``samples`` random such pairs."""
    planted = corpus.planted_pairs()
    near = corpus.edits[planted[:, 1]] > 0
    short = near & (corpus.length[planted[:, 0]] <= 19)
    sampled, close_pairs = _length_close_pairs(corpus, samples, np.random.default_rng(0))
    unrelated = ~corpus.same_family(sampled)
    rows = []
    for name, config in FEATURE_VARIANTS.items():
        fps, seconds = measured(lambda: fingerprints(corpus.texts, config))
        planted_distance = hamming(fps[planted[:, 0]], fps[planted[:, 1]])
        sampled_distance = hamming(fps[sampled[:, 0]], fps[sampled[:, 1]])
        row: dict[str, Any] = {"features": name, "n": len(corpus.texts), "fingerprint_s": seconds["wall_s"],
                               "load": seconds["load"]}
        for radius in RADII:
            row[f"recall_r{radius}"] = float((planted_distance[near] <= radius).mean())
            row[f"recall_10_19_words_r{radius}"] = float((planted_distance[short] <= radius).mean())
            row[f"unrelated_r{radius}"] = float(((sampled_distance <= radius) & unrelated).mean() * close_pairs)
        rows.append(row)
    for row in rows:
        row["unrelated_resolution"] = close_pairs / samples  # one sampled hit is worth this many pairs
    return rows


def _length_close_pairs(corpus: Corpus, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``samples`` uniform random pairs of distinct rows whose lengths differ by <= 2 words,
    and how many such pairs there are."""
    order = np.argsort(corpus.length, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    sorted_length = corpus.length[order]
    low = np.searchsorted(sorted_length, corpus.length - 2, "left")
    partners = np.searchsorted(sorted_length, corpus.length + 2, "right") - low - 1
    first = rng.choice(len(order), size=samples, p=partners / partners.sum())
    position = low[first] + rng.integers(0, partners[first])
    position += position >= rank[first]  # skip the row itself
    return np.stack((first, order[position]), axis=1), float(partners.sum() / 2)


# ---------------------------------------------------------------------------
# The index on its own, MinHash and the simhash package
# ---------------------------------------------------------------------------

def bench_index(corpus: Corpus, fps: np.ndarray, recall_rows: int, subset: int) -> tuple[list[dict], list[dict]]:
    """Plain joins at each tau: time, planted precision/recall, sampled recall of all pairs
    within tau; and recall against an exact brute force on the first ``subset`` rows."""
    main = []
    for tau in TAUS:
        pairs, index_time = measured(lambda: near_duplicate_pairs(fps, tau))
        quality = planted_recall(corpus, pairs)
        main.append({"tau": tau, "n": len(fps), "index_s": index_time["wall_s"], "index_cpu_s": index_time["cpu_s"],
                     "load": index_time["load"], "pairs": len(pairs), "planted_precision": quality["precision"],
                     "planted_recall": quality["recall_1_2_edits"],
                     "sampled_recall_all_pairs": sampled_recall(fps, pairs, tau, np.random.default_rng(tau), recall_rows)})
    subset_fps = fps[:subset]
    truth, brute_seconds = timed(lambda: brute_force_pairs(subset_fps, TAUS))
    exact = []
    for tau in TAUS:
        found, seconds = timed(lambda: as_pair_set(near_duplicate_pairs(subset_fps, tau)))
        precision, recall = precision_recall(found, truth[tau])
        exact.append({"tau": tau, "n": len(subset_fps), "pairs_within_tau": len(truth[tau]), "index_s": seconds,
                      "brute_force_s": brute_seconds, "precision": precision, "recall": recall})
    return main, exact


def bench_minhash(corpus: Corpus, sizes: tuple[int, int], ours: dict) -> list[dict]:
    """datasketch MinHash-LSH on the first ``sizes`` rows; seconds at the corpus size from
    the power law through the two sizes (LSH queries grow faster than linearly, so a linear
    extrapolation would flatter it), recall and precision on the larger subset.  Precision
    on a subset does not carry over: unrelated pairs grow with n**2, planted ones with n."""
    n = len(corpus.texts)
    rows = []
    for ngram, threshold in MINHASH_VARIANTS:
        config = FingerprintConfig(ngram=ngram)
        seconds, pairs = [], None
        for size in sizes:
            pairs, time_taken = measured(
                lambda: minhash_near_duplicate_pairs(corpus.texts[:size], threshold=threshold, config=config))
            seconds.append(time_taken["wall_s"])
        exponent = max(1.0, math.log(seconds[1] / seconds[0]) / math.log(sizes[1] / sizes[0]))
        at_n = seconds[1] * (n / sizes[1]) ** exponent
        rows.append({"method": f"minhash word {ngram}-grams, jaccard >= {threshold}", "n_measured": sizes[1],
                     "seconds": seconds[1], "seconds_small": seconds[0], "exponent": exponent,
                     "seconds_at_n": at_n, "seconds_at_n_linear": seconds[1] * n / sizes[1],
                     "speed_ratio_vs_ours": at_n / ours["total_wall_s"], "load": time_taken["load"],
                     **planted_recall(corpus.head(sizes[1]), pairs)})
    return rows


def bench_package(corpus: Corpus, config: FingerprintConfig, subset: int, ours: dict) -> list[dict]:
    """The ``simhash`` package at tau=3 on the first ``subset`` rows, extrapolated linearly
    to the corpus (which flatters it: SimhashIndex grows faster than linearly), against our
    fingerprints + index on the whole corpus (``ours``: the tau=3 row of ``bench_index``
    plus fingerprint seconds): with its own md5 feature hash on our weighted features
    (handed over precomputed, untimed), with our feature hash (fingerprints and pairs must
    equal ours), and from raw text with its own tokeniser."""
    n, texts = len(corpus.texts), corpus.texts[:subset]
    head = corpus.head(subset)

    def row(method: str, seconds: float, pairs: set, note: str) -> dict:
        quality = planted_recall(head, pair_set_array(pairs, subset))
        return {"method": method, "n_measured": subset, "seconds": seconds, "seconds_at_n": seconds * n / subset,
                "speed_ratio_vs_ours": seconds * n / subset / ours["seconds"], "planted_precision": quality["precision"],
                "planted_recall": quality["recall_1_2_edits"], "note": note}

    features = _weighted_features(texts, config)
    md5_hashes, md5_seconds = timed(lambda: [simhash_package.Simhash(f, f=64) for f in features])
    md5_pairs, md5_index_seconds = timed(lambda: _package_index_pairs(md5_hashes, 3))
    ours_pairs = as_pair_set(near_duplicate_pairs(fingerprints(texts, config), 3))
    hashfunc = _package_hashfunc(config)
    same_hash, same_hash_seconds = timed(lambda: [simhash_package.Simhash(f, f=64, hashfunc=hashfunc) for f in features])
    same_hash_pairs, same_hash_index_seconds = timed(lambda: _package_index_pairs(same_hash, 3))
    agree = [int(h.value) for h in same_hash] == [int(x) for x in fingerprints(texts, config)]
    from_text, from_text_seconds = timed(lambda: [simhash_package.Simhash(t, f=64) for t in texts])
    from_text_pairs, from_text_index_seconds = timed(lambda: _package_index_pairs(from_text, 3))
    return [
        {"method": "ours simhash tau=3", "n_measured": n, "seconds": ours["seconds"], "seconds_at_n": ours["seconds"],
         "speed_ratio_vs_ours": 1.0, "planted_precision": ours["planted_precision"],
         "planted_recall": ours["planted_recall"], "note": "fingerprint + index, whole corpus"},
        row("simhash package tau=3", md5_seconds + md5_index_seconds, md5_pairs,
            f"Simhash (md5) {md5_seconds:.1f} s + SimhashIndex {md5_index_seconds:.1f} s; "
            "our weighted features handed to it untimed"),
        row("simhash package, our feature hash", same_hash_seconds + same_hash_index_seconds, same_hash_pairs,
            f"fingerprints equal ours: {agree}; pairs equal ours: {same_hash_pairs == ours_pairs}"),
        row("simhash package from raw text", from_text_seconds + from_text_index_seconds, from_text_pairs,
            "its own tokeniser and features (character 4-grams, unweighted)"),
    ]


def _package_hashfunc(config: FingerprintConfig) -> Callable[[bytes], bytes]:
    return lambda feature: feature_hash(feature.decode("utf-8"), config).to_bytes(8, "big")


def _package_index_pairs(hashes: list, tau: int) -> set[tuple[int, int]]:
    quiet = logging.getLogger("simhash.bench")
    quiet.setLevel(logging.ERROR)  # it warns once per lookup that meets a bucket of 200+
    index = simhash_package.SimhashIndex([(str(i), h) for i, h in enumerate(hashes)], f=64, k=tau, log=quiet)
    pairs = set()
    for i, h in enumerate(hashes):
        pairs.update((i, int(j)) for j in index.get_near_dups(h) if int(j) > i)
    return pairs


def _weighted_features(texts: Sequence[str], config: FingerprintConfig) -> list[dict[str, float]]:
    idf = compute_idf(texts, config)
    return [weighted_shingles(text, config, idf) for text in texts]


# ---------------------------------------------------------------------------
# Scaling and leakage
# ---------------------------------------------------------------------------

def bench_scaling(corpus: Corpus, spec: DedupSpec, sizes: Sequence[int]) -> list[dict]:
    config, rule = fingerprint_config(spec), verify_rule(spec)
    rows = []
    for size in sizes:
        texts = corpus.texts[:size]
        (_, fps), fingerprint_time = measured(lambda: fit_and_fingerprint(texts, config))
        n_words = word_counts(texts)
        candidates, candidates_time = measured(lambda: candidate_pairs(fps, n_words, rule))
        (pairs, _), verify_time = measured(lambda: confirm_on_words(texts, candidates, n_words, rule))
        rows.append({"n": size, "fingerprint_s": fingerprint_time["wall_s"], "candidates_s": candidates_time["wall_s"],
                     "verify_s": verify_time["wall_s"], "candidates": len(candidates), "pairs": len(pairs),
                     "load": fingerprint_time["load"]})
    return rows


def bench_leakage(corpus: Corpus, fps: np.ndarray, spec: DedupSpec, held_out: int, reference: int) -> list[dict]:
    """The last ``held_out`` rows against the first ``reference`` rows, fingerprinted
    (``fps``) with one idf table as a build does: the split's check (nearest reference within tau, on
    fingerprints alone) and the build's rule across the two sets (``nearest_verified``).
    A held-out row leaks when its family (its original and that original's copies) has a
    member among the reference rows; a match outside its family is a false leak."""
    rule, n = verify_rule(spec), len(corpus.texts)
    query_rows, reference_rows = np.arange(n - held_out, n), np.arange(reference)
    query_texts, reference_texts = corpus.texts[n - held_out:], corpus.texts[:reference]
    planted = np.isin(corpus.family[query_rows], corpus.family[reference_rows])
    checks = {
        f"fingerprints, hamming <= {spec.tau} (split)":
            lambda: nearest_within(fps[query_rows], fps[reference_rows], spec.tau)[0],
        "build's rule (fingerprints + words)":
            lambda: nearest_verified(query_texts, reference_texts, fps[query_rows], fps[reference_rows], rule)[0],
    }
    rows = []
    for name, check in checks.items():
        nearest, time_taken = measured(check)
        leaked = nearest >= 0
        same_family = corpus.family[query_rows] == corpus.family[np.maximum(nearest, 0)]
        rows.append({"check": name, "held_out": held_out, "reference": reference, "seconds": time_taken["wall_s"],
                     "cpu_s": time_taken["cpu_s"], "load": time_taken["load"], "leak_rate": float(leaked.mean()),
                     "planted_leak_rate": float(planted.mean()),
                     "planted_leaks_found": float((leaked & planted).sum() / max(planted.sum(), 1)),
                     "false_leaks": int((leaked & ~same_family).sum())})
    return rows


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    body = [[cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in body)) for i, column in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in body]
    return "\n".join(lines)


def run(n: int, quick: bool) -> dict:
    spec = DedupSpec()
    held_out, reference = round(n * 0.095), round(n * 0.86)  # 38k and 344k of 400k
    load_before = os.getloadavg()
    corpus, corpus_s = timed(lambda: make_corpus(n))
    rule = bench_rule(corpus, spec, repeats=1 if quick else 3)
    before = bench_before(corpus)
    fps = fingerprints(corpus.texts, fingerprint_config(spec))
    main, exact = bench_index(corpus, fps, recall_rows=200 if quick else 2_000, subset=2_000 if quick else 50_000)
    ours_tau3 = {"seconds": rule["stages"]["fingerprint"]["wall_s"] + main[0]["index_s"],
                 "planted_precision": main[0]["planted_precision"], "planted_recall": main[0]["planted_recall"]}
    return {
        "n": n, "quick": quick, "corpus_s": corpus_s, "cpus": os.cpu_count(), "load_average_at_start": load_before,
        "rule": rule, "before": before,
        "features": bench_features(corpus.head(min(n, 2_000 if quick else 100_000)), 20_000 if quick else 2_000_000),
        "main": main, "exact_recall": exact,
        "minhash": bench_minhash(corpus, (500, 1_000) if quick else (12_500, 25_000), rule),
        "baselines": bench_package(corpus, fingerprint_config(spec), 1_000 if quick else 25_000, ours_tau3),
        "scaling": bench_scaling(corpus, spec, [s for s in ((1_000, 2_000) if quick else (25_000, 100_000, 200_000)) if s < n]),
        "leakage": bench_leakage(corpus, fps, spec, held_out, reference),
        "load_average_at_end": os.getloadavg(),
    }


def report(results: dict) -> str:
    n, rule = results["n"], results["rule"]
    stage_rows = [{"stage": name, **times} for name, times in rule["stages"].items()]
    stage_rows.append({"stage": "total", "wall_s": rule["total_wall_s"], "cpu_s": rule["total_cpu_s"],
                       "load": rule["load_end"]})
    recall_rows = [{"method": "build's rule (DedupSpec())", **rule}, results["before"]]
    recall_rows += [{**row, "method": f"{row['method']} (first {row['n_measured']})"} for row in results["minhash"]]
    sections = [
        (f"The build's rule on {n} prompts: seconds per stage (the median of {rule['repeats']} runs; "
         f"totals {', '.join(f'{t:.1f}' for t in rule['runs_total_wall_s'])} s; load = 1-min average before)",
         stage_rows, ["stage", "wall_s", "cpu_s", "load"]),
        ("Recall of planted pairs per edit count and per length band (1-2-word edits), precision",
         recall_rows, ["method", *RECALL_COLUMNS]),
        ("Features: planted 1-2-word edits within radius r, and unrelated pairs within r among pairs whose lengths "
         "differ by <= 2 words (estimated; resolution in the last column)",
         results["features"], ["features", "n", "fingerprint_s", *[f"recall_r{r}" for r in RADII],
                               "recall_10_19_words_r16", *[f"unrelated_r{r}" for r in RADII], "unrelated_resolution"]),
        ("Plain index joins on the build's fingerprints (sampled recall = all pairs within tau touching random rows, "
         "by brute force)", results["main"],
         ["tau", "n", "index_s", "index_cpu_s", "load", "pairs", "planted_precision", "planted_recall",
          "sampled_recall_all_pairs"]),
        ("Index vs exact brute force on a subset (recall of ALL pairs within tau)",
         results["exact_recall"], ["tau", "n", "pairs_within_tau", "index_s", "brute_force_s", "precision", "recall"]),
        (f"MinHash-LSH (datasketch, 128 permutations): seconds on two subsets, extrapolated to n={n} by the power law "
         "through them; speed ratio against the build's rule",
         results["minhash"], ["method", "seconds_small", "n_measured", "seconds", "exponent", "seconds_at_n",
                              "seconds_at_n_linear", "speed_ratio_vs_ours", "load"]),
        (f"simhash package at tau=3 on the first n_measured rows, extrapolated linearly to n={n}",
         results["baselines"], ["method", "n_measured", "seconds", "seconds_at_n", "speed_ratio_vs_ours",
                                "planted_precision", "planted_recall", "note"]),
        ("Scaling of the build's rule", results["scaling"],
         ["n", "fingerprint_s", "candidates_s", "verify_s", "candidates", "pairs", "load"]),
        ("Leakage: held-out rows (the last) against reference rows (the first)", results["leakage"],
         ["check", "held_out", "reference", "seconds", "cpu_s", "load", "leak_rate", "planted_leak_rate",
          "planted_leaks_found", "false_leaks"]),
    ]
    load = "  ".join(f"{key}: {' '.join(f'{v:.2f}' for v in results[key])}"
                     for key in ("load_average_at_start", "load_average_at_end"))
    tables = "\n\n".join(f"== {title}\n{format_table(rows, columns)}" for title, rows, columns in sections)
    return f"{tables}\n\n{results['cpus']} CPUs; {load} (a busy machine inflates wall times, not CPU seconds)"


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, help="corpus size (default 400000, or 4000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run with small subsets")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results path")
    args = parser.parse_args(argv)
    n = args.n or (4_000 if args.quick else 400_000)
    results = run(n, args.quick)
    print(report(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
