"""Near-duplicate / leakage benchmark for SimHash (``tasks.dedup``).

    python -m bench.dedup_bench            # 400,000 prompts (a few minutes)
    python -m bench.dedup_bench --quick    # tiny smoke run (seconds)

Builds a seeded synthetic prompt corpus with planted near-duplicates (1-2 word edits) and
exact copies, then reports fingerprint/index time, peak memory, planted-pair precision and
recall, index recall against exact brute force, the ``simhash`` package (whole corpus) and
datasketch MinHashLSH (a subset, extrapolated) in the same process, a scaling table and a
held-out leakage check.  Results are printed and written to ``bench/results/dedup.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simhash as simhash_package

from tasks.dedup.features import FingerprintConfig, feature_hash
from tasks.dedup.fingerprint import fingerprints, fit_and_fingerprint, hamming
from tasks.dedup.index import near_duplicate_pairs, nearest_within
from tasks.dedup.minhash import minhash_near_duplicate_pairs
from tasks.dedup.reference import compute_idf, weighted_shingles

RESULTS_PATH = Path(__file__).parent / "results" / "dedup.json"
TAUS = (3, 10)
SEED = 20240607
NEAR_DUPLICATE_SHARE = 0.10
EXACT_COPY_SHARE = 0.02


# ---------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    family: np.ndarray  # family id per row: a source prompt and every copy made from it

    def planted_pairs(self, rows: np.ndarray | None = None) -> set[tuple[int, int]]:
        """All pairs inside a family (restricted to ``rows``, re-indexed to them)."""
        family = self.family if rows is None else self.family[rows]
        order = np.argsort(family, kind="stable")
        pairs: set[tuple[int, int]] = set()
        boundaries = np.flatnonzero(np.diff(family[order])) + 1
        for members in np.split(order, boundaries):
            if len(members) > 1:
                members = np.sort(members).tolist()
                pairs.update((a, b) for i, a in enumerate(members) for b in members[i + 1:])
        return pairs


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    onsets = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w",
              "br", "ch", "cl", "dr", "fr", "gr", "pl", "pr", "sh", "st", "th", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"]
    codas = ["", "", "n", "r", "s", "t", "l", "nd", "st", "ng"]
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = rng.integers(1, 4)
        words["".join(onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))]
                      + codas[rng.integers(len(codas))] for _ in range(syllables))] = None
    return list(words)


def make_corpus(n: int, seed: int = SEED, vocabulary_size: int = 4000) -> Corpus:
    """``n`` prompts of 10-60 Zipf-distributed words; 10% are 1-2 word edits (substitute,
    insert, delete) of an original prompt and 2% exact copies of one; rows shuffled."""
    rng = np.random.default_rng(seed)
    vocabulary = _vocabulary(rng, vocabulary_size)
    zipf = 1.0 / np.arange(1, vocabulary_size + 1) ** 1.07
    zipf /= zipf.sum()
    n_near, n_exact = int(n * NEAR_DUPLICATE_SHARE), int(n * EXACT_COPY_SHARE)
    n_original = n - n_near - n_exact
    lengths = rng.integers(10, 61, n_original)
    word_ids = rng.choice(vocabulary_size, size=int(lengths.sum()), p=zipf)
    originals = np.split(word_ids, np.cumsum(lengths)[:-1])
    prompts: list[list[int]] = [words.tolist() for words in originals]
    family = list(range(n_original))
    fresh_words = iter(rng.choice(vocabulary_size, size=2 * n_near, p=zipf).tolist())
    for _ in range(n_near):
        source = int(rng.integers(n_original))
        words = list(prompts[source])
        for _ in range(int(rng.integers(1, 3))):
            edit, position = rng.integers(3), int(rng.integers(len(words)))
            if edit == 0:
                words[position] = next(fresh_words)
            elif edit == 1:
                words.insert(position, next(fresh_words))
            elif len(words) > 2:
                del words[position]
        prompts.append(words)
        family.append(source)
    family += [int(rng.integers(n_original)) for _ in range(n_exact)]
    texts = [_render(words, vocabulary, rng) for words in prompts[:n_original]]
    texts += [_render(words, vocabulary, None) for words in prompts[n_original:]]
    texts += [texts[source] for source in family[n_original + n_near:]]
    shuffle = rng.permutation(n)
    return Corpus([texts[i] for i in shuffle], np.asarray(family)[shuffle])


def _render(words: Sequence[int], vocabulary: list[str], rng: np.random.Generator | None) -> str:
    """Sentence-case prompt; the ending varies only for originals (edits keep '.')."""
    sentence = " ".join(vocabulary[w] for w in words)
    ending = "?" if rng is not None and rng.random() < 0.3 else "."
    return sentence[:1].upper() + sentence[1:] + ending


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


def as_pair_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, pairs.tolist()))


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
# Benchmark sections
# ---------------------------------------------------------------------------

def bench_ours(
    corpus: Corpus, config: FingerprintConfig, recall_rows: int, repeats: int
) -> tuple[np.ndarray, list[dict]]:
    """Fingerprint time is the median of ``repeats`` runs (peak memory from the first)."""
    cpu_start = time.process_time()
    with PeakMemory() as memory:
        fps, first_seconds = timed(lambda: fingerprints(corpus.texts, config))
    fingerprint_cpu_seconds = time.process_time() - cpu_start
    fingerprint_mib = memory.mib
    runs = [first_seconds] + [timed(lambda: fingerprints(corpus.texts, config))[1] for _ in range(repeats - 1)]
    fingerprint_seconds = float(np.median(runs))
    # What a build does: fit the idf table it keeps for later prompts, with the corpus's fingerprints.
    (_, fitted), fit_seconds = timed(lambda: fit_and_fingerprint(corpus.texts, config))
    truth = corpus.planted_pairs()
    rows = []
    for tau in TAUS:
        cpu_start = time.process_time()
        with PeakMemory() as memory:
            pairs, index_seconds = timed(lambda: near_duplicate_pairs(fps, tau))
        index_cpu_seconds = time.process_time() - cpu_start
        precision, recall = precision_recall(as_pair_set(pairs), truth)
        rows.append({
            "tau": tau, "n": len(fps), "fingerprint_s": fingerprint_seconds, "fingerprint_runs_s": runs,
            "fingerprint_cpu_s": fingerprint_cpu_seconds, "fingerprint_peak_mib": fingerprint_mib,
            "fit_and_fingerprint_s": fit_seconds, "fit_fingerprints_equal": bool(np.array_equal(fitted, fps)),
            "index_s": index_seconds, "index_cpu_s": index_cpu_seconds, "index_peak_mib": memory.mib,
            "dedup_s": fingerprint_seconds + index_seconds, "pairs": len(pairs),
            "planted_precision": precision, "planted_recall": recall,
            "sampled_recall_all_pairs": sampled_recall(fps, pairs, tau, np.random.default_rng(tau), recall_rows),
        })
    return fps, rows


def bench_exact_recall(fps: np.ndarray, subset: int) -> list[dict]:
    subset_fps = fps[:subset]
    truth, brute_seconds = timed(lambda: brute_force_pairs(subset_fps, TAUS))
    rows = []
    for tau in TAUS:
        found, seconds = timed(lambda: as_pair_set(near_duplicate_pairs(subset_fps, tau)))
        precision, recall = precision_recall(found, truth[tau])
        rows.append({"tau": tau, "n": len(subset_fps), "pairs_within_tau": len(truth[tau]), "index_s": seconds,
                     "brute_force_s": brute_seconds, "precision": precision, "recall": recall})
    return rows


def bench_baselines(
    corpus: Corpus, config: FingerprintConfig, ours: dict, package_rows: int, subset: int
) -> list[dict]:
    """The ``simhash`` package and datasketch MinHashLSH against ours (``ours``: the tau=3
    row of ``bench_ours``, fingerprint + index on the whole corpus).

    Headline: the package's ``Simhash`` with its own (md5) feature hash on our weighted
    features, which it is handed precomputed (untimed), then ``SimhashIndex`` at tau=3, on
    the first ``package_rows`` rows.  On the first ``subset`` rows: the package with our
    feature hash as ``hashfunc`` (its fingerprints and pairs must equal ours), the package
    from raw text with its own tokeniser, and MinHashLSH.  Times measured on fewer rows
    than the corpus are extrapolated linearly, which flatters them (SimhashIndex grows
    faster than linearly: 25k -> 400k rows took 60x, not 16x, here).
    """
    n, ours_seconds = len(corpus.texts), ours["dedup_s"]

    def row(method: str, rows: int, seconds: float, pairs: set, note: str) -> dict:
        precision, recall = precision_recall(pairs, corpus.planted_pairs(np.arange(rows)))
        extrapolated = seconds * n / rows
        return {"method": method, "n_measured": rows, "seconds": seconds, "seconds_at_n": extrapolated,
                "speed_ratio_vs_ours": extrapolated / ours_seconds, "planted_precision": precision,
                "planted_recall": recall, "note": note}

    head_texts = corpus.texts[:package_rows]
    head_features = _weighted_features(head_texts, config)
    package_hashes, package_seconds = timed(lambda: [simhash_package.Simhash(f, f=64) for f in head_features])
    package_pairs, package_index_seconds = timed(lambda: _package_index_pairs(package_hashes, 3))

    texts = corpus.texts[:subset]
    ours_pairs = as_pair_set(near_duplicate_pairs(fingerprints(texts, config), 3))
    features, hashfunc = _weighted_features(texts, config), _package_hashfunc(config)
    same_hash, same_hash_seconds = timed(lambda: [simhash_package.Simhash(f, f=64, hashfunc=hashfunc) for f in features])
    same_hash_pairs, same_hash_index_seconds = timed(lambda: _package_index_pairs(same_hash, 3))
    agree = [int(h.value) for h in same_hash] == [int(x) for x in fingerprints(texts, config)]
    from_text, from_text_seconds = timed(lambda: [simhash_package.Simhash(t, f=64) for t in texts])
    from_text_pairs, from_text_index_seconds = timed(lambda: _package_index_pairs(from_text, 3))
    minhash_pairs, minhash_seconds = timed(lambda: minhash_near_duplicate_pairs(texts, threshold=0.8, config=config))
    return [
        {"method": "ours simhash tau=3", "n_measured": n, "seconds": ours_seconds, "seconds_at_n": ours_seconds,
         "speed_ratio_vs_ours": 1.0, "planted_precision": ours["planted_precision"],
         "planted_recall": ours["planted_recall"], "note": "fingerprint (median of runs) + index"},
        row("simhash package tau=3", package_rows, package_seconds + package_index_seconds, package_pairs,
            f"Simhash (md5) {package_seconds:.1f} s + SimhashIndex {package_index_seconds:.1f} s; "
            "our weighted features handed to it untimed"),
        row("simhash package, our feature hash", subset, same_hash_seconds + same_hash_index_seconds,
            same_hash_pairs, f"fingerprints equal ours: {agree}; pairs equal ours: {same_hash_pairs == ours_pairs}"),
        row("simhash package from raw text", subset, from_text_seconds + from_text_index_seconds, from_text_pairs,
            "its own tokeniser and features (character 4-grams, unweighted)"),
        row("datasketch MinHashLSH j>=0.8", subset, minhash_seconds, as_pair_set(minhash_pairs),
            "128 permutations, our word bigrams"),
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


def bench_scaling(corpus: Corpus, config: FingerprintConfig, sizes: Sequence[int]) -> list[dict]:
    rows = []
    for size in sizes:
        fps, fingerprint_s = timed(lambda: fingerprints(corpus.texts[:size], config))
        row: dict[str, Any] = {"n": size, "fingerprint_s": fingerprint_s}
        for tau in TAUS:
            pairs, seconds = timed(lambda: near_duplicate_pairs(fps, tau))
            row[f"index_tau{tau}_s"], row[f"pairs_tau{tau}"] = seconds, len(pairs)
        rows.append(row)
    return rows


def bench_leakage(corpus: Corpus, fps: np.ndarray, held_out: int) -> list[dict]:
    """Held-out rows (the last ``held_out``) against the rest, on shared-idf fingerprints."""
    held_out = min(held_out, len(fps) // 2)
    query, reference = fps[-held_out:], fps[:-held_out]
    planted_leak = np.isin(corpus.family[-held_out:], corpus.family[:-held_out])
    rows = []
    for tau in TAUS:
        (nearest, _), seconds = timed(lambda: nearest_within(query, reference, tau))
        leaked = nearest >= 0
        rows.append({"tau": tau, "held_out": held_out, "reference": len(reference), "seconds": seconds,
                     "leak_rate": float(leaked.mean()), "planted_leak_rate": float(planted_leak.mean()),
                     "planted_leaks_found": float((leaked & planted_leak).sum() / max(planted_leak.sum(), 1))})
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
    config = FingerprintConfig()
    subset = 2_000 if quick else 50_000
    baseline_subset = 1_000 if quick else 25_000
    package_rows = 1_000 if quick else n  # the package on the whole corpus takes ~2.5 min here
    held_out = 500 if quick else 20_000
    recall_rows = 200 if quick else 2_000
    sizes = [s for s in ([1_000, 2_000, 4_000] if quick else [25_000, 50_000, 100_000, 200_000, 400_000]) if s <= n]

    load_before = os.getloadavg()
    corpus, corpus_s = timed(lambda: make_corpus(n))
    fps, main_rows = bench_ours(corpus, config, recall_rows, repeats=1 if quick else 3)
    return {
        "n": n, "quick": quick, "corpus_s": corpus_s, "cpus": os.cpu_count(),
        "load_average_at_start": load_before, "config": config.__dict__,
        "main": main_rows,
        "exact_recall": bench_exact_recall(fps, subset),
        "baselines": bench_baselines(corpus, config, main_rows[0], package_rows, baseline_subset),
        "scaling": bench_scaling(corpus, config, sizes),
        "leakage": bench_leakage(corpus, fps, held_out),
        "load_average_at_end": os.getloadavg(),
    }


def report(results: dict) -> str:
    n = results["n"]
    sections = [
        (f"Ours on {n} prompts (planted = pairs within copy families; sampled recall = all pairs"
         " within tau touching 2,000 random rows, by brute force against all rows)",
         results["main"], ["tau", "n", "fingerprint_s", "fingerprint_cpu_s", "fingerprint_peak_mib", "fit_and_fingerprint_s",
                           "index_s", "index_cpu_s",
                           "index_peak_mib", "dedup_s", "pairs",
                           "planted_precision", "planted_recall", "sampled_recall_all_pairs"]),
        ("Index vs exact brute force on a subset (recall of ALL pairs within tau)",
         results["exact_recall"], ["tau", "n", "pairs_within_tau", "index_s", "brute_force_s", "precision", "recall"]),
        (f"Baselines in this process on the first n_measured rows; seconds_at_n extrapolated linearly to n={n}",
         results["baselines"], ["method", "n_measured", "seconds", "seconds_at_n",
                                "speed_ratio_vs_ours", "planted_precision", "planted_recall", "note"]),
        ("Scaling (ours)", results["scaling"],
         ["n", "fingerprint_s", "index_tau3_s", "pairs_tau3", "index_tau10_s", "pairs_tau10"]),
        ("Leakage: held-out rows vs the rest (nearest_within)", results["leakage"],
         ["tau", "held_out", "reference", "seconds", "leak_rate", "planted_leak_rate", "planted_leaks_found"]),
    ]
    load = "  ".join(f"{key}: {' '.join(f'{v:.2f}' for v in results[key])}"
                     for key in ("load_average_at_start", "load_average_at_end"))
    tables = "\n\n".join(f"== {title}\n{format_table(rows, columns)}" for title, rows, columns in sections)
    return f"{tables}\n\n{results['cpus']} CPUs; {load} (a busy machine inflates wall times)"


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
