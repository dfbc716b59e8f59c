"""Tests for the SimHash near-duplicate / leakage engine (tasks/dedup/: features, fingerprint, index,
minhash; reference holds the readable per-text references they are pinned to)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import simhash as simhash_package
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.dedup import features as simhash_features
from tasks.dedup import index as simhash_index
from tasks.dedup.features import FingerprintConfig, IdfTable, feature_hash, normalize_text, shingles
from tasks.dedup.fingerprint import fingerprints, hamming
from tasks.dedup.index import cluster_keep, cross_pairs, near_duplicate_pairs, nearest_within
from tasks.dedup.minhash import minhash_near_duplicate_pairs
from tasks.dedup.reference import compute_idf, weighted_shingles

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
CONFIGS = [
    FingerprintConfig(),
    FingerprintConfig(weighting="tf"),
    FingerprintConfig(shingle="char", ngram=4),
    FingerprintConfig(ngram=3, normalize=False),
    FingerprintConfig(ngram=1),
]


def random_texts(rng: np.random.Generator, count: int, low: int = 3, high: int = 25) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(low, high)))) for _ in range(count)]


def brute_force_pairs(fps: np.ndarray, tau: int) -> np.ndarray:
    i, j = np.nonzero(np.triu(hamming(fps[:, None], fps[None, :]) <= tau, k=1))
    return np.stack((i, j), axis=1).astype(np.int64)


def brute_force_cross(query: np.ndarray, reference: np.ndarray, tau: int) -> np.ndarray:
    q, r = np.nonzero(hamming(query[:, None], reference[None, :]) <= tau)
    return np.stack((q, r), axis=1).astype(np.int64)


def planted_fingerprints(seed: int, n_random: int = 1500, n_near: int = 500, n_copies: int = 40) -> np.ndarray:
    """Random fingerprints plus neighbours 0..12 bits away and exact copies."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, n_random, dtype=np.uint64, endpoint=False)
    near = base[rng.integers(0, n_random, n_near)].copy()
    for row, flips in enumerate(rng.integers(0, 13, n_near)):
        for bit in rng.choice(64, size=flips, replace=False):
            near[row] ^= np.uint64(1) << np.uint64(bit)
    copies = base[rng.integers(0, n_random, n_copies)]
    return rng.permutation(np.concatenate((base, near, copies)))


def flip_bits(value: int, rng: np.random.Generator, count: int) -> int:
    for bit in rng.choice(64, size=count, replace=False):
        value ^= 1 << int(bit)
    return value


# ---------------------------------------------------------------------------
# Normalisation, features, hashing
# ---------------------------------------------------------------------------

def test_normalize_text() -> None:
    assert normalize_text("  Hello,   WORLD!\n\tIt's  ＦＵＬＬ-width ﬁne… ") == "hello world it s full width fine"
    assert normalize_text("Café — déjà vu?!") == "café déjà vu"
    assert normalize_text("हिन्दी भाषा।") == "हिन्दी भाषा"  # combining vowel signs stay inside words
    assert normalize_text("$5 + 3% = #tag @user") == "5 3 tag user"
    assert normalize_text("...!!!") == ""


def test_shingles() -> None:
    config = FingerprintConfig()
    assert shingles("The cat, the HAT.", config) == ["the cat", "cat the", "the hat"]
    assert shingles("Alone", config) == ["alone"]  # shorter than an n-gram: one feature
    assert shingles(" ,. ", config) == []
    assert shingles("abcd", FingerprintConfig(shingle="char", ngram=3)) == ["abc", "bcd"]
    assert shingles("a b", FingerprintConfig(shingle="char", ngram=2)) == ["a ", " b"]
    assert shingles("A b", FingerprintConfig(normalize=False, ngram=1)) == ["A", "b"]


def reference_feature_hash(feature: str, config: FingerprintConfig) -> int:
    """Independent restatement of the documented hash: blake2b-8 per unit, polynomial fold
    mod 2**64, murmur3 fmix64."""
    mask = (1 << 64) - 1
    units = feature.split(" ") if config.shingle == "word" else list(feature)
    digests = [int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little") for u in units]
    h = digests[0]
    for digest in digests[1:]:
        h = (h * 0x9E3779B97F4A7C15 + digest) & mask
    for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h = ((h ^ (h >> 33)) * multiplier) & mask
    return h ^ (h >> 33)


def test_feature_hash_is_pinned() -> None:
    assert feature_hash("hello world", FingerprintConfig()) == 0x2DF61084EA882EB5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6).filter(lambda s: " " not in s), min_size=1, max_size=4))
def test_feature_hash_matches_reference(units: list[str]) -> None:
    word_config, char_config = FingerprintConfig(), FingerprintConfig(shingle="char")
    assert feature_hash(" ".join(units), word_config) == reference_feature_hash(" ".join(units), word_config)
    assert feature_hash("".join(units), char_config) == reference_feature_hash("".join(units), char_config)


# ---------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------

def test_fingerprint_is_pinned() -> None:
    fps = fingerprints(["The quick brown fox jumps over the lazy dog."], FingerprintConfig())
    assert fps.dtype == np.uint64
    assert int(fps[0]) == 0x05C419028987E611


def test_fingerprints_are_deterministic_and_process_independent() -> None:
    texts = random_texts(np.random.default_rng(3), 40)
    first = fingerprints(texts, FingerprintConfig())
    assert np.array_equal(first, fingerprints(texts, FingerprintConfig()))
    script = (
        "import sys, json; from tasks.dedup.features import FingerprintConfig;"
        "from tasks.dedup.fingerprint import fingerprints;"
        "print(json.dumps([int(x) for x in fingerprints(json.loads(sys.stdin.read()), FingerprintConfig())]))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(texts), capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert json.loads(other.stdout) == [int(x) for x in first]


def test_fingerprint_edge_cases() -> None:
    config = FingerprintConfig()
    assert fingerprints([], config).shape == (0,)
    fps = fingerprints(["", "one", "", "two words"], config)
    assert fps[0] == 0 and fps[2] == 0
    narrow = fingerprints(random_texts(np.random.default_rng(4), 20), FingerprintConfig(bits=24))
    assert int(narrow.max()) < 2**24
    with pytest.raises(ValueError):
        FingerprintConfig(bits=7)
    with pytest.raises(ValueError):
        FingerprintConfig(shingle="token")  # type: ignore[arg-type]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_own_idf_equals_supplied_idf(config: FingerprintConfig) -> None:
    texts = random_texts(np.random.default_rng(5), 60)
    own = fingerprints(texts, config)
    assert np.array_equal(own, fingerprints(texts, config, idf=compute_idf(texts, config)))
    assert np.array_equal(own, fingerprints(texts, config, idf=IdfTable.fit(texts, config)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(WORDS[:6] + [",", "É", "\t"]), max_size=10).map(" ".join), max_size=12),
       st.sampled_from(CONFIGS), st.integers(1, 3))
def test_fitted_idf_table_equals_compute_idf(texts: list[str], config: FingerprintConfig, batch_size: int) -> None:
    """The vectorised fit (batched, merged in hash partitions) is the reference ``compute_idf``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(simhash_features, "_TEXTS_PER_BATCH", batch_size)
        fitted = IdfTable.fit(texts, config)
    reference = IdfTable.from_mapping(compute_idf(texts, config), config)
    assert np.array_equal(fitted.hashes, reference.hashes) and np.array_equal(fitted.weights, reference.weights)


def test_idf_table_fitted_on_one_corpus_weighs_another() -> None:
    config = FingerprintConfig()
    corpus, others = random_texts(np.random.default_rng(9), 50), ["alpha bravo zzz-unknown words", ""]
    table = IdfTable.fit(corpus, config)
    assert np.array_equal(fingerprints(others, config, idf=table),
                          fingerprints(others, config, idf=compute_idf(corpus, config)))
    assert IdfTable.fit([], config).lookup(np.array([1, 2], dtype=np.uint64)).tolist() == [65536.0, 65536.0]


def test_unknown_features_take_the_rarest_idf() -> None:
    config = FingerprintConfig()
    idf = {"alpha bravo": 1.0, "zzz": 3.0}
    assert weighted_shingles("alpha bravo charlie", config, idf) == {"alpha bravo": 1.0, "bravo charlie": 3.0}


@pytest.mark.parametrize("config", CONFIGS + [FingerprintConfig(bits=32)], ids=str)
def test_fingerprints_equal_simhash_package(config: FingerprintConfig) -> None:
    """Same features, same weights, our feature hash as ``hashfunc``: identical bits.

    Passing our hash (rather than adopting the package's md5) keeps fingerprinting
    vectorised: units are hashed once and n-grams folded in numpy, no n-gram string is built.
    """
    rng = np.random.default_rng(6)
    texts = random_texts(rng, 80) + ["echo echo echo echo", "Alpha, alpha; ALPHA alpha!"]
    idf = compute_idf(texts, config)
    ours = fingerprints(texts, config)

    def hashfunc(feature: bytes) -> bytes:
        return feature_hash(feature.decode("utf-8"), config).to_bytes(8, "big")

    theirs = [simhash_package.Simhash(weighted_shingles(t, config, idf), f=config.bits, hashfunc=hashfunc).value
              for t in texts]
    assert [int(x) for x in ours] == theirs


def test_near_duplicate_pairs_equal_simhash_index() -> None:
    rng = np.random.default_rng(7)
    texts = [" ".join(f"w{w}" for w in rng.integers(0, 500, int(rng.integers(40, 80)))) for _ in range(150)]
    for source in rng.integers(0, 150, 60):  # one-word edits and exact copies of earlier texts
        words = texts[source].split()
        words[int(rng.integers(len(words)))] = f"w{rng.integers(0, 500)}"
        texts += [" ".join(words), texts[source]]
    config = FingerprintConfig()
    idf = compute_idf(texts, config)

    def hashfunc(feature: bytes) -> bytes:
        return feature_hash(feature.decode("utf-8"), config).to_bytes(8, "big")

    hashes = [simhash_package.Simhash(weighted_shingles(t, config, idf), f=64, hashfunc=hashfunc) for t in texts]
    index = simhash_package.SimhashIndex([(str(i), h) for i, h in enumerate(hashes)], f=64, k=3)
    theirs = {(i, int(j)) for i, h in enumerate(hashes) for j in index.get_near_dups(h) if int(j) > i}
    ours = near_duplicate_pairs(fingerprints(texts, config), 3)
    assert len(theirs) > 20
    assert set(map(tuple, ours.tolist())) == theirs


def per_text_fingerprint(text: str, config: FingerprintConfig, idf: dict[str, float]) -> int:
    """The definition, one text and one bit at a time: bit b is set iff the features with
    bit b set carry more than half of the text's weight."""
    weights = weighted_shingles(text, config, idf)
    hashes = {feature: feature_hash(feature, config) for feature in weights}
    total = sum(weights.values())
    return sum(1 << bit for bit in range(config.bits)
               if sum(w for f, w in weights.items() if hashes[f] >> bit & 1) > total / 2)


MESSY_CHARACTERS = list("ab AbZ\t\n\x0b\x1c\x1f\x85\u00a0\u3000.,!-'$é\u0301ＦﬁİßΣς\u0915\u093f")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(MESSY_CHARACTERS), max_size=24), min_size=1, max_size=9),
       st.sampled_from(CONFIGS), st.integers(1, 4))
def test_batched_fingerprints_equal_the_per_text_definition(texts: list[str], config: FingerprintConfig,
                                                            batch_size: int) -> None:
    """Arrow tokenisation, batching and global document frequencies change nothing: any
    mix of ASCII and non-ASCII text, odd whitespace, empty texts, batch boundaries."""
    texts = texts + ["lone \ud800 surrogate", ""]
    idf = compute_idf(texts, config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(simhash_features, "_TEXTS_PER_BATCH", batch_size)
        ours = fingerprints(texts, config)
    assert [int(x) for x in ours] == [per_text_fingerprint(t, config, idf) for t in texts]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12), min_size=1, max_size=6),
    st.randoms(use_true_random=False),
)
def test_identical_normalized_texts_have_identical_fingerprints(sentences: list[list[str]], rnd) -> None:
    texts, variants = [], []
    for words in sentences:
        texts.append(" ".join(words))
        variants.append("  ".join((w.upper() if rnd.random() < 0.5 else w) + rnd.choice(["", ",", "!", " -"])
                                  for w in words))
    for config in (FingerprintConfig(), FingerprintConfig(shingle="char", ngram=3)):
        fps = fingerprints(texts + variants, config)
        assert np.array_equal(fps[: len(texts)], fps[len(texts):])


# ---------------------------------------------------------------------------
# Hamming distance
# ---------------------------------------------------------------------------

def test_hamming_matches_python_popcount() -> None:
    rng = np.random.default_rng(8)
    a = rng.integers(0, 2**64, 500, dtype=np.uint64, endpoint=False)
    b = rng.integers(0, 2**64, 500, dtype=np.uint64, endpoint=False)
    expected = [bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b)]
    assert hamming(a, b).tolist() == expected
    assert hamming(np.uint64(0), np.uint64(2**64 - 1)) == 64


fingerprint_values = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(fingerprint_values, fingerprint_values, fingerprint_values)
def test_hamming_is_a_metric(a: int, b: int, c: int) -> None:
    x, y, z = (np.array([v], dtype=np.uint64) for v in (a, b, c))
    assert hamming(x, y)[0] == hamming(y, x)[0] == bin(a ^ b).count("1")
    assert hamming(x, x)[0] == 0
    assert int(hamming(x, z)[0]) <= int(hamming(x, y)[0]) + int(hamming(y, z)[0])


# ---------------------------------------------------------------------------
# Index
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("tau", [3, 10])
def test_near_duplicate_pairs_equal_brute_force(tau: int) -> None:
    fps = planted_fingerprints(seed=tau)
    found = near_duplicate_pairs(fps, tau)
    assert found.dtype == np.int64 and found.shape[1] == 2
    assert np.array_equal(found, brute_force_pairs(fps, tau))
    assert np.array_equal(found, near_duplicate_pairs(fps, tau))  # deterministic


@pytest.mark.parametrize("tau", [3, 10])
@pytest.mark.parametrize("plan_kind", ["sampled", "exact"])
def test_every_plan_kind_equals_brute_force(tau: int, plan_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simhash_index, "_CANDIDATE_CHUNK", 1000)  # exercise chunked emission
    fps = planted_fingerprints(seed=20 + tau)
    rng = np.random.default_rng(0)
    plan = simhash_index._sampled_plan(tau, 14, 1e-6, rng) if plan_kind == "sampled" else simhash_index._exact_plan(tau, tau + 2, rng)
    found = simhash_index._self_join_with_plan(fps, simhash_index._group_identical(fps), tau, plan)
    assert np.array_equal(found, brute_force_pairs(fps, tau))


def test_giant_buckets_fall_back_to_chunked_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simhash_index, "_CANDIDATE_CHUNK", 5000)
    rng = np.random.default_rng(9)
    base = int(rng.integers(0, 2**63))
    cluster = np.array([flip_bits(base, rng, int(rng.integers(0, 8))) for _ in range(400)], dtype=np.uint64)
    fps = np.concatenate((cluster, rng.integers(0, 2**63, 400, dtype=np.uint64)))
    plan = simhash_index._sampled_plan(6, 8, 1e-4, np.random.default_rng(1))  # short keys: huge buckets
    found = simhash_index._self_join_with_plan(fps, simhash_index._group_identical(fps), 6, plan)
    assert np.array_equal(found, brute_force_pairs(fps, 6))
    assert np.array_equal(near_duplicate_pairs(fps, 6), found)


def test_plan_math() -> None:
    uniform = np.random.default_rng(10).binomial(64, 0.5, 4096)
    exact = simhash_index._choose_plan(3, 400_000, 8e10, uniform, 1e-4, np.random.default_rng(0),
                                simhash_index._SECONDS_PER_SELF_CANDIDATE)
    assert exact.exact and [len(t) for t in exact.tables] == [16, 16, 16, 16]
    sampled = simhash_index._choose_plan(10, 400_000, 8e10, uniform, 1e-4, np.random.default_rng(0),
                                  simhash_index._SECONDS_PER_SELF_CANDIDATE)
    k, tables = len(sampled.tables[0]), len(sampled.tables)
    hit = math.comb(64 - 10, k) / math.comb(64, k)
    assert not sampled.exact and 12 <= k <= 24
    assert (1 - hit) ** tables <= 1e-4 < (1 - hit) ** (tables - 1)
    assert all(len(set(t.tolist())) == k for t in sampled.tables)


def test_miss_probability_holds_at_distance_tau() -> None:
    """Pairs exactly tau apart are found with probability 1 - (1 - P_hit)**L."""
    rng = np.random.default_rng(11)
    base = rng.integers(0, 2**64, 3000, dtype=np.uint64, endpoint=False)
    partners = np.array([flip_bits(int(v), rng, 10) for v in base], dtype=np.uint64)
    fps = np.concatenate((base, partners))
    plan = simhash_index._sampled_plan(10, 16, 0.2, np.random.default_rng(2))
    found = set(map(tuple, simhash_index._self_join_with_plan(fps, simhash_index._group_identical(fps), 10, plan).tolist()))
    recall = np.mean([(i, i + 3000) in found for i in range(3000)])
    expected = 1 - (1 - math.comb(54, 16) / math.comb(64, 16)) ** len(plan.tables)
    assert expected >= 0.8 and abs(recall - expected) < 0.04


@settings(max_examples=60, deadline=None)
@given(
    st.lists(fingerprint_values, min_size=0, max_size=60),
    st.lists(st.tuples(st.integers(0, 59), st.integers(0, 64)), max_size=30),
    st.integers(0, 16),
    st.integers(0, 3),
)
def test_near_duplicate_pairs_subset_of_brute_force(values, mutations, tau, seed) -> None:
    fps = np.array(values, dtype=np.uint64)
    if len(fps):  # plant close neighbours and copies
        extra = [int(fps[i % len(fps)]) ^ (1 << bit if bit < 64 else 0) for i, bit in mutations]
        fps = np.concatenate((fps, np.array(extra, dtype=np.uint64)))
    found = near_duplicate_pairs(fps, tau, seed=seed)
    expected = set(map(tuple, brute_force_pairs(fps, tau).tolist())) if len(fps) else set()
    assert set(map(tuple, found.tolist())) <= expected
    assert np.all(found[:, 0] < found[:, 1])


@pytest.mark.parametrize("tau", [3, 10])
def test_cross_pairs_and_nearest_within_equal_brute_force(tau: int) -> None:
    fps = planted_fingerprints(seed=30 + tau)
    query, reference = fps[:600], fps[600:]
    pairs = cross_pairs(query, reference, tau)
    assert np.array_equal(pairs, brute_force_cross(query, reference, tau))

    nearest, distance = nearest_within(query, reference, tau)
    all_distances = hamming(query[:, None], reference[None, :]).astype(np.int64)
    best = all_distances.min(axis=1)
    has_match = best <= tau
    assert has_match.any() and not has_match.all()
    assert np.array_equal(distance, np.where(has_match, best, -1))
    first_best = np.argmax(all_distances == best[:, None], axis=1)  # ties -> smallest index
    assert np.array_equal(nearest, np.where(has_match, first_best, -1))


def test_cross_pairs_with_exact_copies_and_empty_sides() -> None:
    reference = np.array([5, 5, 7, 5, 2**63], dtype=np.uint64)
    query = np.array([5, 4, 5], dtype=np.uint64)
    assert cross_pairs(query, reference, 0).tolist() == [[0, 0], [0, 1], [0, 3], [2, 0], [2, 1], [2, 3]]
    assert nearest_within(query, reference, 1)[0].tolist() == [0, 0, 0]
    assert cross_pairs(query[:0], reference, 3).shape == (0, 2)
    assert nearest_within(query, reference[:0], 3)[0].tolist() == [-1, -1, -1]


def test_argument_validation() -> None:
    with pytest.raises(ValueError):
        near_duplicate_pairs(np.zeros(3, dtype=np.uint64), -1)
    with pytest.raises(ValueError):
        near_duplicate_pairs(np.zeros(3, dtype=np.uint64), 3, miss_probability=0.0)
    with pytest.raises(ValueError):
        near_duplicate_pairs(np.zeros((3, 2), dtype=np.uint64), 3)


# ---------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------

def test_cluster_keep_priority_rule() -> None:
    pairs = np.array([[0, 1], [1, 2], [3, 4], [6, 5]])
    priority = np.array([5, 1, 1, 9, 0, 2, 2, 7])
    keep = cluster_keep(8, pairs, priority)
    # {0,1,2}: priority 1 at rows 1 and 2 -> row 1; {3,4}: row 4; {5,6}: tie -> row 5; 7 alone.
    assert keep.tolist() == [1, 1, 1, 4, 4, 5, 5, 7]
    assert cluster_keep(3, np.zeros((0, 2), dtype=np.int64), np.zeros(3)).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        cluster_keep(3, pairs[:1], np.zeros(2))


def test_cluster_keep_is_deterministic_and_order_free() -> None:
    rng = np.random.default_rng(12)
    pairs = rng.integers(0, 300, (200, 2))
    priority = rng.integers(0, 5, 300)
    keep = cluster_keep(300, pairs, priority)
    assert np.array_equal(keep, cluster_keep(300, pairs[rng.permutation(200)][:, ::-1], priority))
    assert np.all(keep[keep] == keep)  # representatives represent themselves
    assert np.all(priority[keep] <= priority)


# ---------------------------------------------------------------------------
# MinHash baseline
# ---------------------------------------------------------------------------

def test_minhash_pairs_find_planted_near_duplicates() -> None:
    rng = np.random.default_rng(13)
    texts = random_texts(rng, 60, low=30, high=40)
    planted = []
    for source in range(0, 20, 2):
        words = texts[source].split()
        words[len(words) // 2] = "zzzz"
        planted.append((source, len(texts)))
        texts.append(" ".join(words))
    pairs = set(map(tuple, minhash_near_duplicate_pairs(texts, threshold=0.7).tolist()))
    assert set(planted) <= pairs
    assert len(pairs) <= len(planted) + 2


def test_fingerprinter_reuses_its_fit_pass_and_weighs_other_texts_with_the_corpus_idf() -> None:
    from schemas.spec import DedupSpec
    from tasks.dedup.near_duplicates import Fingerprinter

    corpus = random_texts(np.random.default_rng(10), 40)
    fingerprinter = Fingerprinter.fit(corpus, DedupSpec())
    config = fingerprinter.config
    assert np.array_equal(fingerprinter(corpus), fingerprints(corpus, config))
    others = random_texts(np.random.default_rng(11), 5)
    assert np.array_equal(fingerprinter(others), fingerprints(others, config, idf=compute_idf(corpus, config)))
    assert fingerprinter([]).shape == (0,)
    tf = Fingerprinter.fit(corpus, DedupSpec(weighting="tf"))
    assert tf.idf is None and np.array_equal(tf(others), fingerprints(others, tf.config))
