"""Near-duplicates confirmed on words (tasks/dedup/verify.py): the word-bag distance, the
rule's parts, verified pairs against a brute force of the rule, and recall and precision on
a planted corpus."""

from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.near_duplicate_corpus import make_corpus, planted_recall
from schemas.records import prompt_schema
from schemas.spec import DedupSpec
from tasks.dedup import verify
from tasks.dedup import features as simhash_features
from tasks.dedup.features import normalize_text, normalized_word_hashes
from tasks.dedup.fingerprint import fingerprints, hamming
from tasks.dedup.near_duplicates import (
    Fingerprinter, describe_rule, fingerprint_config, remove_near_duplicates, verify_rule, with_fingerprints,
)
from tasks.dedup.verify import (
    VerifyRule, bag_distance, candidate_pairs, cross_bag_distance, nearest_verified, verified_cross_pairs,
    verified_pairs, word_counts,
)

RULE = verify_rule(DedupSpec())
WORDS = ["alpha", "Bravo", "charlie,", "delta!", "ECHO", "foxtrot", "é", "ﬁne"]
word_lists = st.lists(st.sampled_from(WORDS), max_size=12)


def words_of(text: str) -> Counter:
    return Counter(normalize_text(text).split())


def reference_bag_distance(a: str, b: str) -> int:
    first, second = words_of(a), words_of(b)
    return max(sum(first.values()), sum(second.values())) - sum((first & second).values())


def word_edit_distance(a: str, b: str) -> int:
    first, second = normalize_text(a).split(), normalize_text(b).split()
    row = list(range(len(second) + 1))
    for i, word in enumerate(first, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(second, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1]


# ---------------------------------------------------------------------------
# Word-bag distance
# ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(word_lists.map(" ".join), min_size=1, max_size=15), st.data(), st.integers(1, 40))
def test_bag_distance_equals_the_multiset_definition(texts: list[str], data, keys_per_chunk: int) -> None:
    pairs = np.array(data.draw(st.lists(st.tuples(*[st.integers(0, len(texts) - 1)] * 2), max_size=30)),
                     dtype=np.int64).reshape(-1, 2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify, "_KEYS_PER_CHUNK", keys_per_chunk)  # many chunks, pairs split at any key count
        found = bag_distance(texts, pairs)
    assert found.tolist() == [reference_bag_distance(texts[i], texts[j]) for i, j in pairs.tolist()]


@settings(max_examples=60, deadline=None)
@given(word_lists.map(" ".join), word_lists.map(" ".join))
def test_bag_distance_bounds_the_word_edit_distance(a: str, b: str) -> None:
    distance = int(bag_distance([a, b], np.array([[0, 1]]))[0])
    assert distance == int(bag_distance([b, a], np.array([[0, 1]]))[0])
    assert abs(len(normalize_text(a).split()) - len(normalize_text(b).split())) <= distance <= word_edit_distance(a, b)
    assert bag_distance([a, a.upper() + " ,"], np.array([[0, 1]]))[0] == 0


MESSY_CHARACTERS = list("ab AbZ\t\n\x0b\x1c\x1f\x85\u00a0\u3000.,!-'$é\u0301ＦﬁİßΣς\u0915\u093f")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(MESSY_CHARACTERS), max_size=24), min_size=1, max_size=9),
       st.integers(1, 4))
def test_word_counts_are_the_fingerprint_word_units(texts: list[str], batch_size: int) -> None:
    """Counting word starts in the normalised bytes agrees with the fingerprints' words."""
    texts = texts + ["lone \ud800 surrogate", ""]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(simhash_features, "_TEXTS_PER_BATCH", batch_size)
        counts = word_counts(texts)
        assert counts.tolist() == normalized_word_hashes(texts)[1].tolist()
    assert counts.tolist() == [len(normalize_text(text).split()) for text in texts]


def test_repeated_words_count_with_multiplicity() -> None:
    texts = ["the the the cat", "the cat cat cat", "the " * 300, "the " * 298 + "dog"]
    assert bag_distance(texts, np.array([[0, 1], [2, 3], [0, 0]])).tolist() == [2, 2, 0]
    assert word_counts(texts).tolist() == [4, 4, 300, 299]
    assert bag_distance(texts, np.zeros((0, 2), dtype=np.int64)).shape == (0,)


def test_cross_bag_distance_matches_the_definition() -> None:
    rng = np.random.default_rng(1)
    query = [" ".join(rng.choice(WORDS, int(rng.integers(0, 9)))) for _ in range(20)]
    reference = [" ".join(rng.choice(WORDS, int(rng.integers(0, 9)))) for _ in range(30)]
    pairs = np.stack((rng.integers(0, 20, 200), rng.integers(0, 30, 200)), axis=1)
    assert cross_bag_distance(query, reference, pairs).tolist() == [
        reference_bag_distance(query[q], reference[r]) for q, r in pairs.tolist()]


# ---------------------------------------------------------------------------
# The rule's parts
# ---------------------------------------------------------------------------

def test_allowed_edits_grow_with_the_longer_text() -> None:
    assert RULE.allowed_edits(np.array([0, 10, 29, 30, 39, 40, 59, 60])).tolist() == [2, 2, 2, 3, 3, 4, 5, 6]
    assert (RULE.candidate_radius, RULE.short_text_words, RULE.short_text_radius) == (12, 20, 16)


@pytest.mark.parametrize("words, min_edits, share", [(20, 2, 0.1), (0, 0, 0.0), (5, 3, 0.5), (37, 1, 0.25)])
def test_short_text_reach_is_the_longest_possible_partner(words: int, min_edits: int, share: float) -> None:
    rule = VerifyRule(12, words, 16, min_edits, share)
    lengths = np.arange(0, 2000)
    partners = lengths[lengths - rule.allowed_edits(lengths) <= words]
    assert rule.short_text_reach == partners.max()


def test_rule_and_spec_validation() -> None:
    with pytest.raises(ValueError):
        VerifyRule(65, 20, 16, 2, 0.1)
    with pytest.raises(ValueError):
        VerifyRule(12, 20, 16, 2, 1.0)
    with pytest.raises(ValidationError, match="exceeds the fingerprint"):
        DedupSpec(bits=16, tau=10, candidate_margin=8)
    with pytest.raises(ValidationError, match="short_text_radius"):
        DedupSpec(bits=16, short_text_radius=20)
    with pytest.raises(ValidationError):
        DedupSpec(word_edit_share=1.0)
    assert DedupSpec().ngram == 1


def test_describe_rule_states_the_spec_numbers() -> None:
    text = describe_rule(DedupSpec())
    for part in ("64-bit SimHash over word 1-grams weighted by idf", "within Hamming distance 12 (tau 10 + 2)",
                 "within 16 when the shorter prompt has at most 20 words", "probability 0.01",
                 "max(2, floor(0.1 x the longer prompt's word count))", "tau = 10"):
        assert part in text
    other = describe_rule(DedupSpec(tau=8, candidate_margin=3, short_text_words=12, short_text_radius=14,
                                    min_word_edits=1, word_edit_share=0.2))
    assert "11 (tau 8 + 3)" in other and "within 14 when the shorter prompt has at most 12 words" in other
    assert "max(1, floor(0.2 x" in other
    assert describe_rule(DedupSpec(method="minhash", minhash_threshold=0.6)).endswith("Jaccard similarity >= 0.6")


# ---------------------------------------------------------------------------
# Verified pairs against a brute force of the rule
# ---------------------------------------------------------------------------

def edited_texts(seed: int, n: int = 300) -> list[str]:
    """Random texts of 3-40 words from 60 words, plus 1-3-word edits and copies of them."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"w{i}" for i in range(60)]
    texts = [" ".join(rng.choice(vocabulary, int(rng.integers(3, 41)))) for _ in range(n)]
    for source in rng.integers(0, n, n // 2).tolist():
        words = texts[source].split()
        for _ in range(int(rng.integers(0, 4))):
            position = int(rng.integers(len(words)))
            words[position:position + 1] = [[], [str(rng.choice(vocabulary))], [words[position], "zz"]][int(rng.integers(3))]
        texts.append(" ".join(words))
    return texts


def brute_force_rule(query: list[str], reference: list[str], query_fps: np.ndarray, reference_fps: np.ndarray,
                     rule: VerifyRule) -> set[tuple[int, int]]:
    bits = hamming(query_fps[:, None], reference_fps[None, :])
    lengths_query, lengths_reference = word_counts(query), word_counts(reference)
    shorter = np.minimum(lengths_query[:, None], lengths_reference[None, :])
    candidate = (bits <= rule.candidate_radius) | ((bits <= rule.short_text_radius) & (shorter <= rule.short_text_words))
    found = set()
    for q, r in zip(*np.nonzero(candidate)):
        longer = max(lengths_query[q], lengths_reference[r])
        if reference_bag_distance(query[q], reference[r]) <= rule.allowed_edits(longer):
            found.add((int(q), int(r)))
    return found


OTHER_RULES = [VerifyRule(10, 0, 0, 1, 0.05), VerifyRule(8, 12, 14, 3, 0.2)]  # no short-text join; other numbers


@pytest.mark.parametrize("seed, rule", [(0, RULE), (1, RULE), (2, OTHER_RULES[0]), (3, OTHER_RULES[1])])
def test_verified_pairs_equal_a_brute_force_of_the_rule(seed: int, rule: VerifyRule,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "MISS_PROBABILITY", 1e-9)  # the index then finds every pair
    texts = edited_texts(seed)
    fps = fingerprints(texts, fingerprint_config(DedupSpec()))
    pairs, distance = verified_pairs(texts, fps, rule)
    expected = {(i, j) for i, j in brute_force_rule(texts, texts, fps, fps, rule) if i < j}
    assert len(expected) > 50 and set(map(tuple, pairs.tolist())) == expected
    assert np.array_equal(pairs, np.unique(pairs, axis=0))
    assert distance.tolist() == [reference_bag_distance(texts[i], texts[j]) for i, j in pairs.tolist()]
    # The short-text radius adds pairs the candidate radius alone misses, and the word check drops some.
    n_words = word_counts(texts)
    narrow = VerifyRule(rule.candidate_radius, 0, 0, rule.min_word_edits, rule.word_edit_share)
    assert len(verified_pairs(texts, fps, narrow)[0]) < len(pairs) or not rule.widens_short_texts
    assert len(candidate_pairs(fps, n_words, rule)) > len(pairs)


@pytest.mark.parametrize("seed, rule", [(4, RULE), (5, OTHER_RULES[0]), (6, OTHER_RULES[1])])
def test_verified_cross_pairs_and_nearest_equal_a_brute_force(seed: int, rule: VerifyRule,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "MISS_PROBABILITY", 1e-9)
    texts = edited_texts(seed)
    fps = fingerprints(texts, fingerprint_config(DedupSpec()))
    query, reference = texts[::3], [t for i, t in enumerate(texts) if i % 3]
    query_fps, reference_fps = fps[::3], fps[np.arange(len(texts)) % 3 != 0]
    pairs, distance = verified_cross_pairs(query, reference, query_fps, reference_fps, rule)
    expected = brute_force_rule(query, reference, query_fps, reference_fps, rule)
    assert len(expected) > 30 and set(map(tuple, pairs.tolist())) == expected
    assert distance.tolist() == [reference_bag_distance(query[q], reference[r]) for q, r in pairs.tolist()]

    nearest, words_apart = nearest_verified(query, reference, query_fps, reference_fps, rule)
    for q in range(len(query)):
        partners = sorted((reference_bag_distance(query[q], reference[r]), int(hamming(query_fps[q], reference_fps[r])), r)
                          for qq, r in expected if qq == q)
        assert (nearest[q], words_apart[q]) == ((partners[0][2], partners[0][0]) if partners else (-1, -1))
    empty = nearest_verified(query, [], query_fps, reference_fps[:0], rule)
    assert empty[0].tolist() == [-1] * len(query)


# ---------------------------------------------------------------------------
# The dedup step and the goal on a planted corpus
# ---------------------------------------------------------------------------

def test_planted_corpus_recall_and_precision() -> None:
    """5,000 prompts of the benchmark's generator (30k-word Zipf vocabulary, 10-60 words, 10%
    1-2-word edits, 2% copies): the build's rule finds >= 95% of the edits at precision >= 0.99."""
    corpus = make_corpus(5_000)
    start = time.perf_counter()
    fingerprinter = Fingerprinter.fit(corpus.texts, DedupSpec())
    pairs, _ = verified_pairs(corpus.texts, fingerprinter(corpus.texts), verify_rule(DedupSpec()))
    seconds = time.perf_counter() - start
    quality = planted_recall(corpus, pairs)
    assert quality["recall_1_2_edits"] >= 0.95 and quality["recall_0_edit"] == 1.0
    assert quality["recall_10_19_words"] >= 0.9
    assert quality["precision"] >= 0.99
    assert seconds < 10


def test_dedup_step_removes_word_edits_and_says_how_far() -> None:
    texts = ["Which dances are performed at weddings in Punjab and who leads them?",
             "Which dances are performed at weddings in the Punjab and who leads them?",
             "How do I make fresh pasta without a machine at home tonight?",
             "Which songs are sung at weddings in Kerala and who sings them?"]
    rows = [{"prompt_id": f"p{i}", "text": text, "origin": "source", "parent_ids": []} for i, text in enumerate(texts)]
    table = pa.Table.from_pylist(rows, schema=prompt_schema([]))
    spec = DedupSpec()
    result = remove_near_duplicates(with_fingerprints(table, Fingerprinter.fit(texts, spec)), spec, seed=0)
    assert result.kept["prompt_id"].to_pylist() == ["p0", "p2", "p3"]
    assert result.rejects["related_id"].to_pylist() == ["p0"]
    assert re.fullmatch(r"simhash hamming \d+, word-bag distance 1", result.rejects["detail"][0].as_py())
