"""Near-duplicate and leakage detection with SimHash fingerprints (pure, numpy-vectorised).

Fingerprints
------------
A text is normalised (NFKC, lowercase, Unicode punctuation/symbols -> space, whitespace
collapsed), cut into units (words, or characters when ``shingle == "char"``) and into
n-gram features.  Each unit gets a stable 64-bit hash (blake2b, 8 bytes); an n-gram's hash
folds its units' hashes polynomially (``h = h * M + u mod 2**64``) and finishes with the
murmur3 ``fmix64`` avalanche.  ``feature_hash`` is the same function for one feature
string, so it can be handed to the ``simhash`` package as its ``hashfunc`` and reproduce
our fingerprints bit for bit.

No per-word or per-n-gram Python object is made.  Texts go in batches to a thread pool: a
batch is normalised as one byte buffer (ASCII texts by a byte table; the rare non-ASCII
text by Python's Unicode functions first), split and dictionary-encoded in Arrow, its
distinct words hashed once, its n-grams folded in numpy, and its (text, feature) term
counts kept as a sparse matrix over its distinct features (pandas ``factorize``).
Document frequencies are the one global step: batches' distinct features are merged by
hash in disjoint hash partitions, in parallel.  Bits are then weighted sums per batch.
``IdfTable.fit`` is the same pass kept as a table (``compute_idf`` is its readable
reference), so prompts fingerprinted later weigh their features like the corpus did.

Bit ``b`` of a fingerprint is 1 iff the features with bit ``b`` set carry more than half of
the text's total weight (the ``simhash`` package's rule, ties -> 0).  A feature's weight
is its term frequency times its idf (``"idf"``) or its term frequency alone (``"tf"``);
idf is the smoothed ``ln((1 + N) / (1 + df)) + 1``.  Idf values are rounded to multiples
of 2**-16, so every weighted sum is an exactly representable float: the result does not
depend on summation order, machine or library.

Index
-----
A pair of 64-bit fingerprints at Hamming distance ``d`` agrees on ``k`` bit positions
drawn at random (without replacement) with probability

    P_hit(d, k) = C(64 - d, k) / C(64, k).

``L`` independent tables, each keyed on its own ``k`` random positions, miss a pair at
distance ``tau`` with probability ``(1 - P_hit(tau, k)) ** L``; we use the smallest
``L >= ln(miss_probability) / ln(1 - P_hit(tau, k))``.  Closer pairs are missed even
less often.  For small ``tau`` an exact pigeonhole family competes: cut a random
permutation of the 64 positions into ``B > tau`` blocks; a pair within ``tau`` differs in
at most ``tau`` blocks, so it agrees on at least one of the ``C(B, B - tau)`` unions of
``B - tau`` blocks (``tau = 3``, ``B = 4``: four 16-bit keys, recall exactly 1).  ``k = 0``
(one table, every pair a candidate) is plain brute force.

The plan is the family member with the lowest modelled cost,
``L * (c_table + c_item(k) * items + c_pair * candidates(k))``, where the number of
candidates per table is ``pairs * mean(P_hit(d_s, k))`` over the distances ``d_s`` of a
few thousand random pairs: that mean is the exact collision rate of a random key, so
skewed, clustered fingerprint sets get longer keys automatically.  At 400,000 random-ish
fingerprints this picks the exact 4 x 16-bit plan for ``tau = 3`` and 209 tables of
``k = 16`` bits for ``tau = 10`` (miss probability 1e-4 at distance 10).

Each table computes keys with per-byte lookup tables, orders them with numpy's linear
radix sort (16-bit digits), and compares sorted neighbours ``1, 2, ... 32`` positions
apart (buckets are small, so this stops early); pairs farther apart exist only in large
buckets and are expanded in bounded chunks, a chunked brute force that keeps giant
buckets from exhausting memory.  Every candidate is checked with an exact popcount, so
precision is exactly 1.  Identical fingerprints are collapsed before indexing and
expanded after; tables run on a small thread pool (numpy releases the GIL).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, combinations
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "FingerprintConfig",
    "normalize_text",
    "shingles",
    "feature_hash",
    "compute_idf",
    "IdfTable",
    "fit_and_fingerprint",
    "weighted_shingles",
    "fingerprints",
    "hamming",
    "near_duplicate_pairs",
    "cross_pairs",
    "nearest_within",
    "cluster_keep",
    "minhash_near_duplicate_pairs",
]


@dataclass(frozen=True)
class FingerprintConfig:
    bits: int = 64
    shingle: Literal["word", "char"] = "word"
    ngram: int = 2
    weighting: Literal["idf", "tf"] = "idf"
    normalize: bool = True

    def __post_init__(self) -> None:
        if not 8 <= self.bits <= 64:
            raise ValueError(f"bits must be in 8..64, got {self.bits}")
        if self.shingle not in ("word", "char"):
            raise ValueError(f"shingle must be 'word' or 'char', got {self.shingle!r}")
        if self.ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {self.ngram}")
        if self.weighting not in ("idf", "tf"):
            raise ValueError(f"weighting must be 'idf' or 'tf', got {self.weighting!r}")


# ---------------------------------------------------------------------------
# Normalisation and features
# ---------------------------------------------------------------------------

@functools.cache
def _separator_tables() -> tuple[dict[int, str], bytes]:
    """Unicode punctuation (P*) and symbols (S*) -> space: a str.translate table and its
    ASCII restriction as a bytes.translate table (the fast path for ASCII text).

    Built from the Unicode database rather than ``[\\W_]`` because ``\\W`` also matches
    combining marks, which would split words in scripts such as Devanagari.
    """
    separators = [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c))[0] in "PS"]
    unicode_table = dict.fromkeys(separators, " ")
    ascii_table = bytes(ord(" ") if byte in unicode_table else byte for byte in range(256))
    return unicode_table, ascii_table


def _normalized_words(text: str) -> list[str]:
    unicode_table, ascii_table = _separator_tables()
    if text.isascii():  # NFKC is the identity on ASCII; bytes ops are ~10x faster
        return text.encode("ascii").lower().translate(ascii_table).decode("ascii").split()
    return unicodedata.normalize("NFKC", text).lower().translate(unicode_table).split()


def normalize_text(text: str) -> str:
    """NFKC, lowercase, punctuation/symbols to spaces, whitespace collapsed and stripped."""
    return " ".join(_normalized_words(text))


def _units(text: str, config: FingerprintConfig) -> list[str]:
    if config.shingle == "word":
        return _normalized_words(text) if config.normalize else text.split()
    return list(normalize_text(text) if config.normalize else text)


def _unit_separator(config: FingerprintConfig) -> str:
    return " " if config.shingle == "word" else ""


def shingles(text: str, config: FingerprintConfig) -> list[str]:
    """N-gram features of one text, in order, repeats kept.

    A text with fewer units than ``config.ngram`` yields one feature made of all its units;
    an empty text yields none.
    """
    units = _units(text, config)
    n = min(config.ngram, len(units))
    separator = _unit_separator(config)
    return [separator.join(units[i:i + n]) for i in range(len(units) - n + 1)] if units else []


_WORKERS = max(1, min(4, os.cpu_count() or 1))  # threads for batches and index tables
_MASK64 = (1 << 64) - 1
_NGRAM_MULTIPLIER = 0x9E3779B97F4A7C15
_FMIX_1 = 0xFF51AFD7ED558CCD
_FMIX_2 = 0xC4CEB9FE1A85EC53
_WEIGHT_SCALE = 1 << 16


def _bytes_hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _unit_hash(unit: str) -> int:
    return _bytes_hash(unit.encode("utf-8", "surrogatepass"))


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * _FMIX_1) & _MASK64
    h ^= h >> 33
    h = (h * _FMIX_2) & _MASK64
    return h ^ (h >> 33)


def _fmix64(h: np.ndarray) -> np.ndarray:
    shift = np.uint64(33)
    h = h ^ (h >> shift)
    h *= np.uint64(_FMIX_1)
    h ^= h >> shift
    h *= np.uint64(_FMIX_2)
    h ^= h >> shift
    return h


def feature_hash(feature: str, config: FingerprintConfig) -> int:
    """64-bit hash of one feature string as returned by ``shingles`` (stable everywhere)."""
    units = feature.split(" ") if config.shingle == "word" else list(feature)
    h = 0
    for position, unit in enumerate(units):
        h = _unit_hash(unit) if position == 0 else (h * _NGRAM_MULTIPLIER + _unit_hash(unit)) & _MASK64
    return _fmix64_int(h)


def _smooth_idf(document_frequency: np.ndarray, n_texts: int) -> np.ndarray:
    return np.log((1.0 + n_texts) / (1.0 + document_frequency)) + 1.0


def _quantize(weight: np.ndarray) -> np.ndarray:
    """Weights as integer multiples of 2**-16, expressed in those units (exact floats)."""
    return np.rint(np.asarray(weight, dtype=np.float64) * _WEIGHT_SCALE)


def compute_idf(texts: Sequence[str], config: FingerprintConfig) -> dict[str, float]:
    """Smoothed idf of every feature of ``texts``, by feature string: the readable reference
    for ``IdfTable.fit``, which computes the same table vectorised (and which builds use)."""
    document_frequency = Counter(chain.from_iterable(set(shingles(t, config)) for t in texts))
    features = list(document_frequency)
    values = _smooth_idf(np.array([document_frequency[f] for f in features], dtype=np.float64), len(texts))
    return dict(zip(features, values.tolist()))


def _default_idf(idf: dict[str, float]) -> float:
    """Features missing from a supplied idf table count as the rarest known feature."""
    return max(idf.values()) if idf else 1.0


def weighted_shingles(
    text: str, config: FingerprintConfig, idf: dict[str, float] | None = None
) -> dict[str, float]:
    """The exact (quantised) feature weights ``fingerprints`` uses for ``text``.

    With ``weighting == "idf"`` and no table, idf is computed over ``[text]`` alone, as
    ``fingerprints([text], config)`` would.
    """
    term_frequency = Counter(shingles(text, config))
    if config.weighting == "tf":
        return {feature: float(count) for feature, count in term_frequency.items()}
    table = compute_idf([text], config) if idf is None else idf
    features = list(term_frequency)
    known = [table.get(f) for f in features]
    if None in known:  # the default scans the whole table: only when it is needed
        default = _default_idf(table)
        known = [default if value is None else value for value in known]
    quantized = _quantize(known) / _WEIGHT_SCALE
    return {f: term_frequency[f] * float(q) for f, q in zip(features, quantized)}


# ---------------------------------------------------------------------------
# Vectorised fingerprinting
# ---------------------------------------------------------------------------

# Texts per batch: large enough to amortise per-call overhead, small enough that a batch's
# arrays (~1M features, a few MiB each) are recycled by the allocator; fresh large arrays
# are page-faulted in, which on small VMs costs more than the arithmetic done on them.
_TEXTS_PER_BATCH = 1 << 15


@functools.cache
def _ascii_byte_map(normalize: bool) -> bytes:
    """``bytes.translate`` table doing to ASCII bytes what ``_units`` does to ASCII text:
    whitespace -> space and, when normalising, lowercase and punctuation/symbols -> space.
    Bytes >= 128 (inside UTF-8 sequences) pass unchanged."""
    _, ascii_table = _separator_tables()
    mapped = bytearray(range(256))
    for byte in range(128):
        if chr(byte).isspace() or (normalize and ascii_table[byte] == ord(" ")):
            mapped[byte] = ord(" ")
        elif normalize:
            mapped[byte] = ord(chr(byte).lower())
    return bytes(mapped)


def _word_unit_hashes(texts: Sequence[str], config: FingerprintConfig) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every word of every text, concatenated, and the word count per text.

    ASCII texts are normalised as one buffer by a byte table and split and
    dictionary-encoded in Arrow, so no per-word Python object is made; only the rare
    non-ASCII text goes through ``_units`` first.  Each distinct word is hashed once.
    """
    joined = " ".join(texts) + " "
    if joined.isascii():
        byte_lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    else:
        bodies = [text if text.isascii() else " ".join(_units(text, config)) for text in texts]
        byte_lengths = np.fromiter(
            (len(b) if b.isascii() else len(b.encode("utf-8", "surrogatepass")) for b in bodies),
            dtype=np.int64, count=len(bodies),
        )
        joined = " ".join(bodies) + " "
    buffer = joined.encode("utf-8", "surrogatepass").translate(_ascii_byte_map(config.normalize))
    offsets = np.concatenate(([0], np.cumsum(byte_lengths + 1)))  # each text keeps its trailing separator
    # Binary, not string: text with lone surrogates is not valid UTF-8, and Arrow need not care.
    text_array = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(texts), [None, pa.py_buffer(offsets), pa.py_buffer(buffer)]
    )
    words = pc.ascii_split_whitespace(text_array.cast(pa.large_string(), safe=False))
    encoded = pc.dictionary_encode(pc.list_flatten(words))
    vocabulary = encoded.dictionary.cast(pa.large_binary()).to_pylist()
    vocabulary_hashes = np.fromiter(map(_bytes_hash, vocabulary), dtype=np.uint64, count=len(vocabulary))
    word_ids = encoded.indices.to_numpy(zero_copy_only=False)
    # Arrow yields an empty word before a leading and after a trailing separator (every
    # text here has one): drop them.
    is_word = word_ids != (vocabulary.index(b"") if b"" in vocabulary else -1)
    units_per_text = np.add.reduceat(is_word, words.offsets.to_numpy()[:-1], dtype=np.int64)
    return np.take(vocabulary_hashes, word_ids[is_word]), units_per_text


def _char_unit_hashes(texts: Sequence[str], config: FingerprintConfig) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every character of every (normalised) text and the character count per text."""
    bodies = [normalize_text(text) if config.normalize else text for text in texts]
    units_per_text = np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies))
    codepoints = np.frombuffer("".join(bodies).encode("utf-32-le", "surrogatepass"), dtype="<u4")
    hash_of_codepoint = np.zeros(int(codepoints.max()) + 1 if codepoints.size else 0, dtype=np.uint64)
    for codepoint in np.flatnonzero(np.bincount(codepoints)):
        hash_of_codepoint[codepoint] = _unit_hash(chr(codepoint))
    return hash_of_codepoint[codepoints], units_per_text


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` via a plain sort: numpy 2's hash-based unique is ~5x slower on
    millions of int64 codes with many repeats."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def _ngram_hashes(
    unit_hashes: np.ndarray, units_per_text: np.ndarray, ngram: int
) -> tuple[np.ndarray, np.ndarray]:
    """Feature hashes of all texts (grouped by text, in order) and the count per text.

    Every position folds the ``ngram`` units starting there, across text ends too; the
    windows that cross an end are then masked out, and a text shorter than ``ngram``
    gets one feature folded from all its units.
    """
    multiplier = np.uint64(_NGRAM_MULTIPLIER)
    folded = unit_hashes.copy()
    for offset in range(1, ngram):
        head = folded[: max(len(folded) - offset, 0)]
        np.multiply(head, multiplier, out=head)
        np.add(head, unit_hashes[offset:], out=head)
    starts = _exclusive_cumsum(units_per_text)
    ends = starts + units_per_text
    complete = units_per_text >= ngram
    short = (units_per_text > 0) & ~complete
    window_starts = np.ones(len(folded), dtype=bool)
    short_folds = unit_hashes[starts[short]]
    for offset in range(1, ngram):
        window_starts[ends[complete] - offset] = False
        within = units_per_text[short] > offset
        window_starts[starts[short][within] + offset] = False
        short_folds[within] = short_folds[within] * multiplier + unit_hashes[starts[short][within] + offset]
    folded[starts[short]] = short_folds
    features_per_text = np.where(complete, units_per_text - ngram + 1, short.astype(np.int64))
    return _fmix64(folded[window_starts]), features_per_text


@dataclass(frozen=True)
class _TextFeatures:
    """A batch of texts as a sparse (texts x features) term-frequency matrix; column c is
    the feature with hash ``hashes[c]``, found in ``document_frequency[c]`` of the texts."""
    hashes: np.ndarray
    term_frequency: csr_matrix
    document_frequency: np.ndarray


def _text_features(texts: Sequence[str], config: FingerprintConfig) -> _TextFeatures:
    unit_hashes = _word_unit_hashes if config.shingle == "word" else _char_unit_hashes
    feature_hashes, features_per_text = _ngram_hashes(*unit_hashes(texts, config), config.ngram)
    column, hashes = pd.factorize(feature_hashes)
    row_offsets = np.concatenate(([0], np.cumsum(features_per_text)))
    counts = csr_matrix((np.ones(len(column)), column, row_offsets), shape=(len(texts), len(hashes)))
    counts.sum_duplicates()  # repeats of a feature in one text -> its term frequency
    return _TextFeatures(hashes, counts, np.bincount(counts.indices, minlength=len(hashes)))


def _featurise(texts: list[str], config: FingerprintConfig, pool: ThreadPoolExecutor) -> list[_TextFeatures]:
    batches = [texts[start:start + _TEXTS_PER_BATCH] for start in range(0, len(texts), _TEXTS_PER_BATCH)]
    return list(pool.map(lambda batch: _text_features(batch, config), batches))


def _thread_pool(texts: Sequence[str]) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(_WORKERS, -(-len(texts) // _TEXTS_PER_BATCH))))


@dataclass(frozen=True)
class _FeaturePartition:
    """The distinct features (by hash) of one hash partition over all batches, with their
    document frequencies; batch ``b``'s columns ``columns[b]`` are features ``feature[b]``."""
    hashes: np.ndarray
    document_frequency: np.ndarray
    columns: list[np.ndarray]
    feature: list[np.ndarray]


def _partition_features(batches: Sequence[_TextFeatures], pool: ThreadPoolExecutor) -> list[_FeaturePartition]:
    """Batches' features matched across batches by hash, in ``_WORKERS`` disjoint hash
    partitions merged in parallel (each merge is a pandas ``factorize``)."""
    if not batches:
        return []
    owner = [batch.hashes % np.uint64(_WORKERS) for batch in batches]

    def merge(part: int) -> _FeaturePartition:
        columns = [np.flatnonzero(batch_owner == part) for batch_owner in owner]
        feature_id, hashes = pd.factorize(np.concatenate([b.hashes[c] for b, c in zip(batches, columns)]))
        document_frequency = np.bincount(
            feature_id, weights=np.concatenate([b.document_frequency[c] for b, c in zip(batches, columns)]),
            minlength=len(hashes),
        )
        return _FeaturePartition(hashes, document_frequency, columns,
                                 np.split(feature_id, np.cumsum([len(c) for c in columns])[:-1]))

    return list(pool.map(merge, range(_WORKERS)))


def _corpus_idf_weights(
    batches: Sequence[_TextFeatures], partitions: Sequence[_FeaturePartition], n_texts: int
) -> list[np.ndarray]:
    """Quantised smoothed idf of every batch's features, from document frequencies over all batches."""
    weights = [np.empty(len(batch.hashes)) for batch in batches]
    for partition in partitions:
        partition_weights = _quantize(_smooth_idf(partition.document_frequency, n_texts))
        for batch_weights, columns, feature in zip(weights, partition.columns, partition.feature):
            batch_weights[columns] = partition_weights[feature]
    return weights


@dataclass(frozen=True)
class IdfTable:
    """Quantised idf by feature hash: fit once on a corpus, then fingerprint other texts
    (generated prompts, held-out sets) in the same weighting.  Features the table does
    not know count as its rarest feature."""

    hashes: np.ndarray  # sorted uint64 feature hashes
    weights: np.ndarray  # their idf in units of 2**-16

    @classmethod
    def fit(cls, texts: Sequence[str], config: FingerprintConfig) -> IdfTable:
        """The table ``fingerprints(texts, config)`` weighs with (``compute_idf``, vectorised)."""
        texts = list(texts)
        with _thread_pool(texts) as pool:
            return cls._from_partitions(_partition_features(_featurise(texts, config, pool), pool), len(texts))

    @classmethod
    def _from_partitions(cls, partitions: Sequence[_FeaturePartition], n_texts: int) -> IdfTable:
        hashes = np.concatenate([p.hashes for p in partitions] + [np.zeros(0, dtype=np.uint64)])
        frequencies = np.concatenate([p.document_frequency for p in partitions] + [np.zeros(0)])
        order = np.argsort(hashes)
        return cls(hashes[order], _quantize(_smooth_idf(frequencies[order], n_texts)))

    @classmethod
    def from_mapping(cls, idf: Mapping[str, float], config: FingerprintConfig) -> IdfTable:
        """A ``compute_idf``-style table of feature strings."""
        hashes = np.fromiter((feature_hash(f, config) for f in idf), dtype=np.uint64, count=len(idf))
        order = np.argsort(hashes)
        return cls(hashes[order], _quantize(np.fromiter(idf.values(), dtype=np.float64, count=len(idf)))[order])

    def lookup(self, feature_hashes: np.ndarray) -> np.ndarray:
        default = self.weights.max() if len(self.weights) else _quantize(1.0)
        if not len(self.hashes):
            return np.full(len(feature_hashes), default)
        slot = np.minimum(np.searchsorted(self.hashes, feature_hashes), len(self.hashes) - 1)
        return np.where(self.hashes[slot] == feature_hashes, self.weights[slot], default)


# Row v: the 8 bits of byte value v, least significant first.
_BYTE_BITS = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.float64)
_BIT_VALUES = 1 << np.arange(8, dtype=np.uint64)


def _simhash(batch: _TextFeatures, feature_weights: np.ndarray, bits: int) -> np.ndarray:
    """Weighted bit majorities, one hash byte at a time.

    For hash byte ``j``, a sparse (texts x 256) matrix holds each (text, feature) weight
    (term frequency x feature weight) at the feature's byte value (duplicates summed);
    times the 256x8 bit table it gives the weight behind each of the 8 bits.  Weights are
    integer-valued floats, so every sum is exact and order-independent.
    """
    matrix = batch.term_frequency
    n_texts = matrix.shape[0]
    weights = matrix.data * feature_weights[matrix.indices]
    half_total = np.add.reduceat(np.append(weights, 0.0), matrix.indptr[:-1])[:, None] / 2
    half_total[np.diff(matrix.indptr) == 0] = 0.0  # reduceat yields the next row's first value for empty rows
    hash_byte_planes = _byte_planes(np.take(batch.hashes, matrix.indices))
    fingerprint = np.zeros(n_texts, dtype=np.uint64)
    for byte in range((bits + 7) // 8):
        weight_by_byte_value = csr_matrix(
            (weights, hash_byte_planes[byte].astype(np.int32), matrix.indptr), shape=(n_texts, 256)
        )
        majority = weight_by_byte_value @ _BYTE_BITS > half_total
        fingerprint |= (majority @ _BIT_VALUES) << np.uint64(8 * byte)
    return fingerprint & np.uint64((1 << bits) - 1)


def fingerprints(
    texts: Sequence[str], config: FingerprintConfig, idf: IdfTable | Mapping[str, float] | None = None
) -> np.ndarray:
    """SimHash fingerprint (uint64, low ``config.bits`` bits used) of every text.

    With ``weighting == "idf"`` and ``idf`` None the idf table comes from ``texts``; pass a
    shared table (``IdfTable.fit``, or ``compute_idf``'s mapping) to compare fingerprints of
    different corpora.  Empty texts get fingerprint 0.  Batches of texts are featurised and
    hashed on a few threads (Arrow, pandas, scipy and numpy release the GIL); only document
    frequencies are global.
    """
    texts = list(texts)
    table = IdfTable.from_mapping(idf, config) if isinstance(idf, Mapping) else idf
    with _thread_pool(texts) as pool:
        batches = _featurise(texts, config, pool)
        if config.weighting == "tf":
            feature_weights = [np.ones(len(batch.hashes)) for batch in batches]
        elif table is not None:
            feature_weights = list(pool.map(lambda batch: table.lookup(batch.hashes), batches))
        else:
            feature_weights = _corpus_idf_weights(batches, _partition_features(batches, pool), len(texts))
        return _fingerprint_bits(batches, feature_weights, config, pool)


def fit_and_fingerprint(texts: Sequence[str], config: FingerprintConfig) -> tuple[IdfTable, np.ndarray]:
    """``IdfTable.fit(texts, config)`` and ``fingerprints(texts, config)`` in one pass."""
    texts = list(texts)
    with _thread_pool(texts) as pool:
        batches = _featurise(texts, config, pool)
        partitions = _partition_features(batches, pool)
        feature_weights = _corpus_idf_weights(batches, partitions, len(texts))
        table = IdfTable._from_partitions(partitions, len(texts))
        return table, _fingerprint_bits(batches, feature_weights, config, pool)


def _fingerprint_bits(batches: Sequence[_TextFeatures], feature_weights: Sequence[np.ndarray],
                      config: FingerprintConfig, pool: ThreadPoolExecutor) -> np.ndarray:
    pieces = pool.map(lambda batch, weights: _simhash(batch, weights, config.bits), batches, feature_weights)
    return np.concatenate([*pieces, np.zeros(0, dtype=np.uint64)])


# ---------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------

def _as_fingerprints(values: np.ndarray | Sequence[int]) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"fingerprints must be one-dimensional, got shape {array.shape}")
    return array if array.dtype == np.uint64 else array.astype(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise (broadcasting) popcount of ``a ^ b`` as uint8."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))


# ---------------------------------------------------------------------------
# Index planning
# ---------------------------------------------------------------------------

_HIT_PROBABILITY = np.array(
    [[math.comb(64 - d, k) / math.comb(64, k) for k in range(65)] for d in range(65)]
)  # [d, k] = C(64 - d, k) / C(64, k)
_DISTANCE_SAMPLE = 4096
_MAX_KEY_BITS = 48  # three 16-bit radix digits
_MAX_TABLES = 4096
# Cost model in seconds per unit, measured on the 2-core dev box (only ratios matter):
# per table (Python overhead), per item for keys + first radix pass + gathers, per item
# for each further 16-bit radix pass, and per candidate pair verified (self joins compare
# shifted sorted arrays; cross joins gather).
_SECONDS_PER_TABLE = 1e-4
_SECONDS_PER_ITEM = 2.1e-8
_SECONDS_PER_ITEM_EXTRA_DIGIT = 2.5e-8
_SECONDS_PER_SELF_CANDIDATE = 5e-9
_SECONDS_PER_CROSS_CANDIDATE = 1.2e-8


@dataclass(frozen=True)
class _IndexPlan:
    tables: tuple[np.ndarray, ...]  # the bit positions each table keys on
    exact: bool


def _collision_rates(distance_sample: np.ndarray) -> np.ndarray:
    """[k] -> probability that a random pair agrees on k random bit positions."""
    if distance_sample.size == 0:
        return np.ones(65)
    return _HIT_PROBABILITY[distance_sample].mean(axis=0)


def _tables_needed(tau: int, key_bits: int, miss_probability: float) -> int:
    hit = _HIT_PROBABILITY[tau, key_bits]
    return 1 if hit >= 1.0 else math.ceil(math.log(miss_probability) / math.log1p(-hit))


def _plan_cost(
    tables: int, key_bits: float, n_items: int, candidates: float, seconds_per_candidate: float
) -> float:
    extra_digits = max(math.ceil(key_bits / 16) - 1, 0)
    item_cost = _SECONDS_PER_ITEM + _SECONDS_PER_ITEM_EXTRA_DIGIT * extra_digits
    return tables * (_SECONDS_PER_TABLE + item_cost * n_items + seconds_per_candidate * candidates)


def _sampled_plan(tau: int, key_bits: int, miss_probability: float, rng: np.random.Generator) -> _IndexPlan:
    tables = _tables_needed(tau, key_bits, miss_probability)
    return _IndexPlan(tuple(np.sort(rng.choice(64, key_bits, replace=False)) for _ in range(tables)), exact=False)


def _exact_plan(tau: int, blocks: int, rng: np.random.Generator) -> _IndexPlan:
    block_positions = np.array_split(rng.permutation(64), blocks)
    keys = combinations(range(blocks), blocks - tau)
    return _IndexPlan(tuple(np.sort(np.concatenate([block_positions[b] for b in key])) for key in keys), exact=True)


def _choose_plan(
    tau: int,
    n_items: int,
    n_pairs: float,
    distance_sample: np.ndarray,
    miss_probability: float,
    rng: np.random.Generator,
    seconds_per_candidate: float,
) -> _IndexPlan:
    """Cheapest sampled (k bits, L tables) or exact (B blocks) plan under the cost model."""
    rates = _collision_rates(distance_sample)
    options: list[tuple[float, bool, int]] = []  # (cost, is sampled, k or B)
    for key_bits in range(0, min(_MAX_KEY_BITS, 64 - tau) + 1):
        tables = _tables_needed(tau, key_bits, miss_probability)
        if tables <= _MAX_TABLES:
            candidates = n_pairs * rates[key_bits]
            options.append((_plan_cost(tables, key_bits, n_items, candidates, seconds_per_candidate), True, key_bits))
    for blocks in range(tau + 1, 65):
        tables = math.comb(blocks, blocks - tau)
        key_bits = (blocks - tau) * 64 / blocks
        if tables <= _MAX_TABLES and key_bits <= _MAX_KEY_BITS:
            candidates = n_pairs * float(np.interp(key_bits, np.arange(65), rates))
            options.append((_plan_cost(tables, key_bits, n_items, candidates, seconds_per_candidate), False, blocks))
    _, sampled, parameter = min(options)
    return _sampled_plan(tau, parameter, miss_probability, rng) if sampled else _exact_plan(tau, parameter, rng)


def _random_pair_distances(
    left: np.ndarray, right: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """Distances of random pairs: distinct rows of ``left``, or ``left`` x ``right``."""
    if right is None:
        if len(left) < 2:
            return np.zeros(0, dtype=np.intp)
        i = rng.integers(0, len(left), _DISTANCE_SAMPLE)
        j = rng.integers(0, len(left) - 1, _DISTANCE_SAMPLE)
        j += j >= i
        return hamming(left[i], left[j]).astype(np.intp)
    if len(left) == 0 or len(right) == 0:
        return np.zeros(0, dtype=np.intp)
    i = rng.integers(0, len(left), _DISTANCE_SAMPLE)
    j = rng.integers(0, len(right), _DISTANCE_SAMPLE)
    return hamming(left[i], right[j]).astype(np.intp)


# ---------------------------------------------------------------------------
# Table keys, sorting and candidate emission
# ---------------------------------------------------------------------------

_CANDIDATE_CHUNK = 1 << 21  # candidate pairs materialised at once
_NEIGHBOUR_OFFSETS = 32  # bucket pairs up to this far apart in sorted order: shifted compares
_BYTE_VALUES = np.arange(256, dtype=np.uint64)


def _byte_planes(fps: np.ndarray) -> np.ndarray:
    """(8, n) contiguous uint8: byte b of every fingerprint in row b."""
    return np.ascontiguousarray(fps.astype("<u8").view(np.uint8).reshape(-1, 8).T)


def _key_dtype(key_bits: int) -> type:
    return np.uint16 if key_bits <= 16 else np.uint32 if key_bits <= 32 else np.uint64


def _table_keys(byte_index_planes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Gather the bits at ``positions`` into a compact key (bit j <- position j) with one
    256-entry lookup table per fingerprint byte; planes are intp so ``take`` needs no cast."""
    lookup = np.zeros((8, 256), dtype=np.uint64)
    for key_bit, position in enumerate(positions.tolist()):
        lookup[position // 8] |= ((_BYTE_VALUES >> np.uint64(position % 8)) & np.uint64(1)) << np.uint64(key_bit)
    dtype = _key_dtype(len(positions))
    lookup = lookup.astype(dtype)
    keys = np.zeros(byte_index_planes.shape[1], dtype=dtype)
    for byte in np.unique(positions // 8).tolist():
        keys |= np.take(lookup[byte], byte_index_planes[byte])
    return keys


def _radix_order(keys: np.ndarray, key_bits: int) -> np.ndarray:
    """Stable order of ``keys`` by LSD radix passes over 16-bit digits (numpy radix-sorts
    uint8/uint16 in linear time; 32/64-bit sorts are several times slower)."""
    if key_bits <= 16:
        return np.argsort(keys, kind="stable")
    order = np.arange(len(keys))
    for shift in range(0, key_bits, 16):
        digit = (keys[order] >> keys.dtype.type(shift)).astype(np.uint8 if key_bits - shift <= 8 else np.uint16)
        order = order[np.argsort(digit, kind="stable")]
    return order


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last position of every run of >= 2 equal values."""
    same_as_next = sorted_values[1:] == sorted_values[:-1]
    edges = np.diff(np.concatenate(([0], same_as_next.view(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _bucket_pairs(
    run_first: np.ndarray, run_last: np.ndarray, min_gap: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Position pairs (p, q), ``q - p >= min_gap``, inside each run, in bounded chunks."""
    rows_per_run = np.maximum(run_last - run_first - min_gap + 1, 0)
    row_position = np.repeat(run_first - _exclusive_cumsum(rows_per_run), rows_per_run) + np.arange(rows_per_run.sum())
    partners = np.repeat(run_last, rows_per_run) - row_position - min_gap + 1
    yield from _expand_rows(row_position, partners, lambda rows, offsets: row_position[rows] + min_gap + offsets)


def _expand_rows(
    row_ids: np.ndarray, partners: np.ndarray, partner_of
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each row r, pairs (row_ids[r], partner_of(r, 0..partners[r]-1)), chunked."""
    cumulative = np.cumsum(partners)
    total = int(cumulative[-1]) if len(cumulative) else 0
    cuts = np.searchsorted(cumulative, np.arange(_CANDIDATE_CHUNK, total, _CANDIDATE_CHUNK), "left") + 1
    bounds = np.unique(np.concatenate(([0], cuts, [len(partners)])))
    for first, last in zip(bounds[:-1], bounds[1:]):
        counts = partners[first:last]
        rows = np.repeat(np.arange(first, last), counts)
        offsets = np.arange(len(rows)) - np.repeat(_exclusive_cumsum(counts), counts)
        yield row_ids[rows], partner_of(rows, offsets)


def _self_table_codes(fps: np.ndarray, byte_index_planes: np.ndarray, positions: np.ndarray, tau: int) -> np.ndarray:
    """Codes ``i * n + j`` (i < j) of the pairs within ``tau`` sharing this table's key.

    Sorted positions ``offset`` apart are compared for every small offset (buckets are
    small, so this stops early); dense offsets compare the shifted arrays whole, sparse
    ones gather the few equal-key positions.  Pairs further apart than
    ``_NEIGHBOUR_OFFSETS`` exist only in big buckets, which get a chunked brute force.
    """
    keys = _table_keys(byte_index_planes, positions)
    order = _radix_order(keys, len(positions))
    sorted_keys, sorted_fps = keys[order], fps[order]  # verify in sorted order: local reads
    firsts, seconds = [], []
    for offset in range(1, _NEIGHBOUR_OFFSETS + 1):
        same_key = sorted_keys[offset:] == sorted_keys[:-offset]
        n_same = np.count_nonzero(same_key)
        if n_same == 0:
            break
        if 8 * n_same > len(same_key):
            close = np.bitwise_count(sorted_fps[offset:] ^ sorted_fps[:-offset]) <= tau
            first = np.flatnonzero(same_key & close)
        else:
            first = np.flatnonzero(same_key)
            first = first[np.bitwise_count(sorted_fps[first] ^ sorted_fps[first + offset]) <= tau]
        firsts.append(first)
        seconds.append(first + offset)
    else:
        for first, second in _bucket_pairs(*_runs(sorted_keys), min_gap=_NEIGHBOUR_OFFSETS + 1):
            close = np.bitwise_count(sorted_fps[first] ^ sorted_fps[second]) <= tau
            firsts.append(first[close])
            seconds.append(second[close])
    if not firsts:
        return np.zeros(0, dtype=np.int64)
    a, b = order[np.concatenate(firsts)], order[np.concatenate(seconds)]
    return np.minimum(a, b) * len(fps) + np.maximum(a, b)


def _cross_table_codes(
    query: np.ndarray, reference: np.ndarray, query_planes: np.ndarray, reference_planes: np.ndarray,
    positions: np.ndarray, tau: int,
) -> np.ndarray:
    """Codes ``q * n_reference + r`` of the pairs within ``tau`` sharing this table's key."""
    query_keys = _table_keys(query_planes, positions)
    reference_keys = _table_keys(reference_planes, positions)
    order = _radix_order(reference_keys, len(positions))
    sorted_keys, sorted_reference = reference_keys[order], reference[order]
    low = np.searchsorted(sorted_keys, query_keys, "left")
    matches = np.searchsorted(sorted_keys, query_keys, "right") - low
    found = []
    for q, offsets in _expand_rows(np.arange(len(query)), matches, lambda rows, offsets: offsets):
        position = low[q] + offsets
        close = np.bitwise_count(query[q] ^ sorted_reference[position]) <= tau
        found.append(q[close] * len(reference) + order[position[close]])
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _run_tables(plan: _IndexPlan, table_codes) -> np.ndarray:
    """Unique pair codes found by any table, tables spread over worker threads (numpy
    releases the GIL in sorts, gathers and ufuncs)."""
    def worker(tables: tuple[np.ndarray, ...]) -> np.ndarray:
        collected: list[np.ndarray] = []
        pending = 0
        for positions in tables:
            codes = table_codes(positions)
            collected.append(codes)
            pending += len(codes)
            if pending > 1 << 23:  # close pairs recur in most tables: compact as we go
                collected, pending = [_sorted_unique(np.concatenate(collected))], 0
        return _sorted_unique(np.concatenate(collected)) if collected else np.zeros(0, dtype=np.int64)

    shares = [plan.tables[w::_WORKERS] for w in range(_WORKERS) if plan.tables[w::_WORKERS]]
    with ThreadPoolExecutor(max_workers=len(shares)) as pool:
        results = list(pool.map(worker, shares))
    return _sorted_unique(np.concatenate(results)) if results else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------------
# Identical-fingerprint groups
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Groups:
    """Rows grouped by identical fingerprint: members of group g are
    ``order[start[g]:start[g] + size[g]]`` (ascending row index)."""
    values: np.ndarray
    order: np.ndarray
    start: np.ndarray
    size: np.ndarray

    @property
    def all_distinct(self) -> bool:
        return len(self.values) == len(self.order)

    def representative(self, group: np.ndarray) -> np.ndarray:
        return self.order[self.start[group]]


def _group_identical(fps: np.ndarray) -> _Groups:
    order = np.argsort(fps, kind="stable")
    sorted_fps = fps[order]
    first = np.ones(len(fps), dtype=bool)
    first[1:] = sorted_fps[1:] != sorted_fps[:-1]
    start = np.flatnonzero(first)
    size = np.diff(np.append(start, len(fps)))
    return _Groups(sorted_fps[start], order, start, size)


def _expand_group_pairs(
    left: _Groups, right: _Groups, left_group: np.ndarray, right_group: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs behind group pairs: every member of ``left_group[i]`` with every member
    of ``right_group[i]``."""
    if left.all_distinct and right.all_distinct:
        return left.representative(left_group), right.representative(right_group)
    counts = left.size[left_group] * right.size[right_group]
    pair = np.repeat(np.arange(len(left_group)), counts)
    member = np.arange(len(pair)) - np.repeat(_exclusive_cumsum(counts), counts)
    width = right.size[right_group][pair]
    a = left.order[left.start[left_group][pair] + member // width]
    b = right.order[right.start[right_group][pair] + member % width]
    return a, b


def _pairs_array(a: np.ndarray, b: np.ndarray, width: int) -> np.ndarray:
    codes = _sorted_unique(a.astype(np.int64) * width + b)
    return np.stack((codes // width, codes % width), axis=1)


# ---------------------------------------------------------------------------
# Public join API
# ---------------------------------------------------------------------------

def _check_join_arguments(tau: int, miss_probability: float) -> int:
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    if not 0.0 < miss_probability < 1.0:
        raise ValueError(f"miss_probability must be in (0, 1), got {miss_probability}")
    return min(int(tau), 64)


def near_duplicate_pairs(
    fps: np.ndarray, tau: int, *, miss_probability: float = 1e-4, seed: int = 0
) -> np.ndarray:
    """Pairs (i, j), i < j, with ``hamming(fps[i], fps[j]) <= tau``, sorted, int64 (k, 2).

    Every reported pair is verified exactly; a pair at distance ``tau`` is missed with
    probability at most ``miss_probability`` (closer pairs less; exact plans never miss).
    """
    tau = _check_join_arguments(tau, miss_probability)
    fps = _as_fingerprints(fps)
    if len(fps) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    groups = _group_identical(fps)
    rng = np.random.default_rng(seed)
    n_unique = len(groups.values)
    plan = _choose_plan(
        tau, n_unique, n_unique * (n_unique - 1) / 2,
        _random_pair_distances(groups.values, None, rng), miss_probability, rng, _SECONDS_PER_SELF_CANDIDATE,
    )
    return _self_join_with_plan(fps, groups, tau, plan)


def _self_join_with_plan(fps: np.ndarray, groups: _Groups, tau: int, plan: _IndexPlan) -> np.ndarray:
    values = groups.values
    planes = _byte_planes(values).astype(np.intp)
    codes = _run_tables(plan, lambda positions: _self_table_codes(values, planes, positions, tau))
    a, b = _expand_group_pairs(groups, groups, codes // len(values), codes % len(values))
    pieces_a, pieces_b = [np.minimum(a, b)], [np.maximum(a, b)]
    shared = groups.size > 1  # rows with identical fingerprints pair up among themselves
    for first, second in _bucket_pairs(groups.start[shared], groups.start[shared] + groups.size[shared] - 1, 1):
        pieces_a.append(groups.order[first])  # members are in ascending row order
        pieces_b.append(groups.order[second])
    return _pairs_array(np.concatenate(pieces_a), np.concatenate(pieces_b), len(fps))


def cross_pairs(
    query_fps: np.ndarray, reference_fps: np.ndarray, tau: int, *, miss_probability: float = 1e-4, seed: int = 0
) -> np.ndarray:
    """Pairs (query_idx, ref_idx) with distance <= tau, sorted, int64 (k, 2); same
    guarantees as ``near_duplicate_pairs``."""
    tau = _check_join_arguments(tau, miss_probability)
    query, reference = _as_fingerprints(query_fps), _as_fingerprints(reference_fps)
    if len(query) == 0 or len(reference) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    query_groups, reference_groups = _group_identical(query), _group_identical(reference)
    rng = np.random.default_rng(seed)
    n_query, n_reference = len(query_groups.values), len(reference_groups.values)
    plan = _choose_plan(
        tau, n_query + n_reference, n_query * n_reference,
        _random_pair_distances(query_groups.values, reference_groups.values, rng), miss_probability, rng,
        _SECONDS_PER_CROSS_CANDIDATE,
    )
    return _cross_join_with_plan(query_groups, reference_groups, tau, plan)


def _cross_join_with_plan(query_groups: _Groups, reference_groups: _Groups, tau: int, plan: _IndexPlan) -> np.ndarray:
    query, reference = query_groups.values, reference_groups.values
    query_planes, reference_planes = _byte_planes(query).astype(np.intp), _byte_planes(reference).astype(np.intp)
    codes = _run_tables(
        plan,
        lambda positions: _cross_table_codes(query, reference, query_planes, reference_planes, positions, tau),
    )
    a, b = _expand_group_pairs(query_groups, reference_groups, codes // len(reference), codes % len(reference))
    return _pairs_array(a, b, len(reference_groups.order))


def nearest_within(
    query_fps: np.ndarray, reference_fps: np.ndarray, tau: int, *, miss_probability: float = 1e-4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: index of the closest reference within ``tau`` (ties -> smallest
    index) and its distance; -1 and -1 where none is found."""
    query, reference = _as_fingerprints(query_fps), _as_fingerprints(reference_fps)
    pairs = cross_pairs(query, reference, tau, miss_probability=miss_probability, seed=seed)
    nearest = np.full(len(query), -1, dtype=np.int64)
    distance = np.full(len(query), -1, dtype=np.int64)
    if len(pairs):
        pair_distance = hamming(query[pairs[:, 0]], reference[pairs[:, 1]]).astype(np.int64)
        order = np.lexsort((pairs[:, 1], pair_distance, pairs[:, 0]))
        query_rows = pairs[order, 0]
        best = order[np.concatenate(([True], query_rows[1:] != query_rows[:-1]))]
        nearest[pairs[best, 0]] = pairs[best, 1]
        distance[pairs[best, 0]] = pair_distance[best]
    return nearest, distance


# ---------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------

def cluster_keep(n: int, pairs: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Representative row of each row's cluster (connected component of ``pairs``, i.e.
    what union-find over the pairs yields): the member with the smallest ``priority``,
    ties -> smallest index.  ``result[i] == i`` marks the rows to keep."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    priority = np.asarray(priority)
    if priority.shape != (n,):
        raise ValueError(f"priority must have shape ({n},), got {priority.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    graph = csr_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    order = np.lexsort((np.arange(n), priority, component))
    sorted_component = component[order]
    first = np.concatenate(([True], sorted_component[1:] != sorted_component[:-1]))
    representative_of_component = np.empty(component.max() + 1, dtype=np.int64)
    representative_of_component[sorted_component[first]] = order[first]
    return representative_of_component[component]


# ---------------------------------------------------------------------------
# MinHash baseline
# ---------------------------------------------------------------------------

def minhash_near_duplicate_pairs(
    texts: Sequence[str],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    config: FingerprintConfig = FingerprintConfig(),
    seed: int = 1,
) -> np.ndarray:
    """Pairs (i, j), i < j, sorted, whose MinHash-estimated Jaccard similarity of feature
    sets is >= ``threshold``; candidates from datasketch ``MinHashLSH``."""
    from datasketch import MinHash, MinHashLSH

    feature_sets = ([feature.encode("utf-8", "surrogatepass") for feature in set(shingles(t, config))] for t in texts)
    signatures = MinHash.bulk(feature_sets, num_perm=num_perm, seed=seed)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for key, signature in enumerate(signatures):
            session.insert(key, signature, check_duplication=False)
    first, second = [], []
    for key, signature in enumerate(signatures):
        later = [other for other in lsh.query(signature) if other > key]
        first.extend([key] * len(later))
        second.extend(later)
    if not first:
        return np.zeros((0, 2), dtype=np.int64)
    first_rows, second_rows = np.array(first, dtype=np.int64), np.array(second, dtype=np.int64)
    hash_values = np.stack([signature.hashvalues for signature in signatures])
    estimated_jaccard = (hash_values[first_rows] == hash_values[second_rows]).mean(axis=1)
    keep = estimated_jaccard >= threshold
    return _pairs_array(first_rows[keep], second_rows[keep], len(signatures))
