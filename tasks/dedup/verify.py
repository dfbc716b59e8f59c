"""Near-duplicate pairs confirmed on words: SimHash candidates within a widened radius,
kept when their word multisets differ by at most a few words.

Why: a 1-2-word edit of a short text can move its 64-bit fingerprint as far as unrelated
texts start to come, so no single radius finds >= 95% of such edits while keeping
unrelated pairs out (``bench/README.md``).  A wider radius plus an exact check on the
words does both.

Rule
----
``words(t)`` is the multiset of t's normalised words (the fingerprints' word units: NFKC,
lowercase, Unicode punctuation and symbols -> space, split on whitespace), ``n(t)`` its
size.  A pair (i, j) is a near-duplicate iff

1. it is a candidate: ``hamming(fp_i, fp_j) <= candidate_radius``, or
   ``hamming(fp_i, fp_j) <= short_text_radius`` and ``min(n_i, n_j) <= short_text_words``
   (short texts move further per edited word).  Both are joins of ``tasks.dedup.index``
   with miss probability ``MISS_PROBABILITY`` at their own radius, which is about 1e-4 at
   distance 10;
2. it is verified: ``bag_distance(i, j) <= allowed_edits(max(n_i, n_j))`` with
   ``bag_distance = max(n_i, n_j) - |words(i) & words(j)|`` (multiset intersection) and
   ``allowed_edits(m) = max(min_word_edits, floor(word_edit_share * m))``.

``bag_distance`` is the word-level edit distance (substitution, insertion and deletion
cost 1) with word order ignored, a lower bound of it; since ``|n_i - n_j| <=
bag_distance``, candidates whose lengths differ by more than ``allowed_edits`` are dropped
before any word is compared.  Only the candidate rows are tokenised for the check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.dedup.features import exclusive_cumsum, normalized_word_counts, normalized_word_hashes
from tasks.dedup.fingerprint import as_fingerprints, hamming
from tasks.dedup.index import cross_pairs, near_duplicate_pairs, pairs_array

MISS_PROBABILITY = 1e-2  # per candidate join, at its own radius
_KEYS_PER_CHUNK = 1 << 23  # (pair, word) keys matched at once when counting shared words


@dataclass(frozen=True)
class VerifyRule:
    """The candidate radii and the word check (module docstring); built from a spec's
    ``dedup`` section by ``tasks.dedup.near_duplicates.verify_rule``."""

    candidate_radius: int
    short_text_words: int
    short_text_radius: int
    min_word_edits: int
    word_edit_share: float

    def __post_init__(self) -> None:
        for name in ("candidate_radius", "short_text_radius"):
            if not 0 <= getattr(self, name) <= 64:
                raise ValueError(f"{name} must be in 0..64, got {getattr(self, name)}")
        if self.short_text_words < 0 or self.min_word_edits < 0:
            raise ValueError("short_text_words and min_word_edits must be >= 0")
        if not 0.0 <= self.word_edit_share < 1.0:
            raise ValueError(f"word_edit_share must be in [0, 1), got {self.word_edit_share}")

    def allowed_edits(self, longer: np.ndarray) -> np.ndarray:
        """Word edits allowed between two texts whose longer one has ``longer`` words."""
        return np.maximum(self.min_word_edits, np.floor(self.word_edit_share * np.asarray(longer)).astype(np.int64))

    def lengths_close(self, n_first: np.ndarray, n_second: np.ndarray) -> np.ndarray:
        return np.abs(n_first - n_second) <= self.allowed_edits(np.maximum(n_first, n_second))

    @property
    def short_text_reach(self) -> int:
        """The longest text that can pair with a short text: the largest m with
        ``m - allowed_edits(m) <= short_text_words`` (m - allowed_edits(m) never decreases)."""
        words = self.short_text_words
        lengths = np.arange(words, int(words / (1.0 - self.word_edit_share)) + self.min_word_edits + 2)
        return int(lengths[lengths - self.allowed_edits(lengths) <= words].max())

    @property
    def widens_short_texts(self) -> bool:
        return self.short_text_radius > self.candidate_radius


# ---------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------

def word_counts(texts: Sequence[str]) -> np.ndarray:
    """n(t): normalised words per text."""
    return normalized_word_counts(texts)


@dataclass(frozen=True)
class _WordBags:
    """Texts as word multisets: text t holds the distinct words
    ``words[offsets[t]:offsets[t + 1]]`` (ids shared by all texts here), ``counts`` times each."""
    words: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray  # n(t)


def _word_bags(texts: Sequence[str]) -> _WordBags:
    hashes, lengths = normalized_word_hashes(texts)
    word_id, vocabulary = pd.factorize(hashes)
    text_word = np.sort(np.repeat(np.arange(len(texts), dtype=np.int64), lengths) * len(vocabulary) + word_id)
    first = np.flatnonzero(np.diff(text_word, prepend=-1))  # first occurrence of each (text, word)
    distinct = text_word[first]
    counts = np.diff(np.append(first, len(text_word)))
    text, word = np.divmod(distinct, max(len(vocabulary), 1))
    offsets = np.concatenate(([0], np.cumsum(np.bincount(text, minlength=len(texts)))))
    return _WordBags(word, counts, offsets, lengths)


def _shared_words(bags: _WordBags, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """|words(first[p]) & words(second[p])| for every pair p, vectorised.

    Each side's distinct words become keys ``p << word_bits | word``: ascending already
    (pairs in order, a bag's words ascending), so the second side's keys are searched for
    the first side's without a sort; a word both hold counts its smaller multiplicity.
    Pairs go in chunks of bounded key count.
    """
    word_bits = int(bags.words.max(initial=1)).bit_length()
    sizes = np.diff(bags.offsets)
    keys_per_pair = sizes[first] + sizes[second]
    cuts = np.searchsorted(np.cumsum(keys_per_pair), np.arange(_KEYS_PER_CHUNK, keys_per_pair.sum(), _KEYS_PER_CHUNK))
    bounds = np.unique(np.concatenate(([0], cuts, [len(first)])))
    shared = np.zeros(len(first), dtype=np.int64)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        first_keys, first_counts = _side_keys(bags, first[start:stop], word_bits)
        second_keys, second_counts = _side_keys(bags, second[start:stop], word_bits)
        slot = np.searchsorted(second_keys, first_keys)
        both = slot < len(second_keys)
        both[both] = second_keys[slot[both]] == first_keys[both]
        common = np.minimum(first_counts[both], second_counts[slot[both]])
        shared[start:stop] = np.bincount(first_keys[both] >> word_bits, weights=common, minlength=stop - start)
    return shared


def _side_keys(bags: _WordBags, rows: np.ndarray, word_bits: int) -> tuple[np.ndarray, np.ndarray]:
    sizes = bags.offsets[rows + 1] - bags.offsets[rows]
    pair = np.repeat(np.arange(len(rows), dtype=np.int64), sizes)
    position = np.repeat(bags.offsets[rows] - exclusive_cumsum(sizes), sizes) + np.arange(len(pair))
    return pair << word_bits | bags.words[position], bags.counts[position]


def _bag_distance_of_rows(texts: Sequence[str], first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """bag_distance(texts[first[p]], texts[second[p]]); only the rows named are tokenised."""
    if len(first) == 0:
        return np.zeros(0, dtype=np.int64)
    rows, local = np.unique(np.concatenate((first, second)), return_inverse=True)
    bags = _word_bags([texts[row] for row in rows.tolist()])
    local_first, local_second = local[:len(first)], local[len(first):]
    longer = np.maximum(bags.lengths[local_first], bags.lengths[local_second])
    return longer - _shared_words(bags, local_first, local_second)


def bag_distance(texts: Sequence[str], pairs: np.ndarray) -> np.ndarray:
    """Word-bag distance of every pair (i, j) of rows of ``texts``."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return _bag_distance_of_rows(texts, pairs[:, 0], pairs[:, 1])


def cross_bag_distance(query_texts: Sequence[str], reference_texts: Sequence[str], pairs: np.ndarray) -> np.ndarray:
    """Word-bag distance of every pair (query row, reference row)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    both = list(query_texts) + list(reference_texts)
    return _bag_distance_of_rows(both, pairs[:, 0], pairs[:, 1] + len(query_texts))


# ---------------------------------------------------------------------------
# Candidates and verified pairs
# ---------------------------------------------------------------------------

def candidate_pairs(fps: np.ndarray, n_words: np.ndarray, rule: VerifyRule, *, seed: int = 0) -> np.ndarray:
    """Sorted (i, j), i < j, within the candidate radius (or the short-text radius) whose
    lengths are close enough to pass the word check."""
    fps = as_fingerprints(fps)
    found = []
    for rows, radius, shorter_at_most in _joins(n_words, rule):
        pairs = rows[near_duplicate_pairs(fps[rows], radius, miss_probability=MISS_PROBABILITY, seed=seed)]
        found.append(pairs[np.minimum(n_words[pairs[:, 0]], n_words[pairs[:, 1]]) <= shorter_at_most])
    pairs = np.concatenate(found)  # rows ascending: i < j survives the mapping
    pairs = pairs_array(pairs[:, 0], pairs[:, 1], len(fps))
    return pairs[rule.lengths_close(n_words[pairs[:, 0]], n_words[pairs[:, 1]])]


def cross_candidate_pairs(query_fps: np.ndarray, reference_fps: np.ndarray, query_words: np.ndarray,
                          reference_words: np.ndarray, rule: VerifyRule, *, seed: int = 0) -> np.ndarray:
    """``candidate_pairs`` between two sets: sorted (query row, reference row)."""
    query, reference = as_fingerprints(query_fps), as_fingerprints(reference_fps)
    found = []
    for (query_rows, radius, shorter_at_most), (reference_rows, _, _) in zip(_joins(query_words, rule),
                                                                              _joins(reference_words, rule)):
        pairs = cross_pairs(query[query_rows], reference[reference_rows], radius,
                            miss_probability=MISS_PROBABILITY, seed=seed)
        pairs = np.stack((query_rows[pairs[:, 0]], reference_rows[pairs[:, 1]]), axis=1)
        found.append(pairs[np.minimum(query_words[pairs[:, 0]], reference_words[pairs[:, 1]]) <= shorter_at_most])
    pairs = np.concatenate(found)
    pairs = pairs_array(pairs[:, 0], pairs[:, 1], len(reference))
    return pairs[rule.lengths_close(query_words[pairs[:, 0]], reference_words[pairs[:, 1]])]


def _joins(n_words: np.ndarray, rule: VerifyRule) -> list[tuple[np.ndarray, int, int]]:
    """(rows, radius, most words of a pair's shorter text) of each Hamming join.  A pair
    with a short text whose lengths are close lies among the rows up to the short-text
    reach, so when the short-text radius is the wider one, that join finds it and the
    other join needs only the longer texts."""
    any_length = np.iinfo(np.int64).max
    if not rule.widens_short_texts:
        return [(np.arange(len(n_words)), rule.candidate_radius, any_length)]
    return [(np.flatnonzero(n_words > rule.short_text_words), rule.candidate_radius, any_length),
            (np.flatnonzero(n_words <= rule.short_text_reach), rule.short_text_radius, rule.short_text_words)]


def verified_pairs(texts: Sequence[str], fps: np.ndarray, rule: VerifyRule, *, seed: int = 0,
                   n_words: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate pairs (i, j), i < j, of ``texts`` under ``rule``, sorted, int64 (k, 2),
    and their word-bag distances; ``n_words`` (``word_counts(texts)``) if already known."""
    n_words = word_counts(texts) if n_words is None else n_words
    return confirm_on_words(texts, candidate_pairs(fps, n_words, rule, seed=seed), n_words, rule)


def confirm_on_words(texts: Sequence[str], candidates: np.ndarray, n_words: np.ndarray,
                     rule: VerifyRule) -> tuple[np.ndarray, np.ndarray]:
    """The candidate pairs that pass the word check, and their word-bag distances."""
    distance = bag_distance(texts, candidates)
    passed = distance <= rule.allowed_edits(np.maximum(n_words[candidates[:, 0]], n_words[candidates[:, 1]]))
    return candidates[passed], distance[passed]


def verified_cross_pairs(query_texts: Sequence[str], reference_texts: Sequence[str], query_fps: np.ndarray,
                         reference_fps: np.ndarray, rule: VerifyRule, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate pairs (query row, reference row) under ``rule``, sorted, and their
    word-bag distances."""
    query_words, reference_words = word_counts(query_texts), word_counts(reference_texts)
    candidates = cross_candidate_pairs(query_fps, reference_fps, query_words, reference_words, rule, seed=seed)
    distance = cross_bag_distance(query_texts, reference_texts, candidates)
    longer = np.maximum(query_words[candidates[:, 0]], reference_words[candidates[:, 1]])
    verified = distance <= rule.allowed_edits(longer)
    return candidates[verified], distance[verified]


def nearest_verified(query_texts: Sequence[str], reference_texts: Sequence[str], query_fps: np.ndarray,
                     reference_fps: np.ndarray, rule: VerifyRule, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: the reference row it near-duplicates with the fewest word edits (ties:
    smaller Hamming distance, then smaller index) and that word-bag distance; -1 and -1
    where it has none."""
    query, reference = as_fingerprints(query_fps), as_fingerprints(reference_fps)
    nearest = np.full(len(query), -1, dtype=np.int64)
    distance = np.full(len(query), -1, dtype=np.int64)
    if len(query) == 0 or len(reference) == 0:
        return nearest, distance
    pairs, words_apart = verified_cross_pairs(query_texts, reference_texts, query, reference, rule, seed=seed)
    bits_apart = hamming(query[pairs[:, 0]], reference[pairs[:, 1]])
    order = np.lexsort((pairs[:, 1], bits_apart, words_apart, pairs[:, 0]))
    first_of_query = order[np.flatnonzero(np.diff(pairs[order, 0], prepend=-1))]
    nearest[pairs[first_of_query, 0]] = pairs[first_of_query, 1]
    distance[pairs[first_of_query, 0]] = words_apart[first_of_query]
    return nearest, distance
