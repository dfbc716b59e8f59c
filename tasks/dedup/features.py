"""SimHash features: normalised text cut into n-gram features, each with a stable 64-bit
hash, and the idf table that weighs them (pure, numpy-vectorised). ``fingerprint`` turns
features into bits, ``index`` finds near-duplicate fingerprints.

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
``IdfTable.fit`` is the same pass kept as a table (``tasks.dedup.reference.compute_idf``
is its readable reference), so prompts fingerprinted later weigh their features like
the corpus did.

A feature's weight is its term frequency times its idf (``"idf"``) or its term frequency
alone (``"tf"``); idf is the smoothed ``ln((1 + N) / (1 + df)) + 1``.  Idf values are
rounded to multiples of 2**-16, so every weighted sum is an exactly representable float:
the result does not depend on summation order, machine or library.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import csr_matrix


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
# Normalisation
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


# ---------------------------------------------------------------------------
# Feature hashing
# ---------------------------------------------------------------------------

WORKERS = max(1, min(4, os.cpu_count() or 1))  # threads for batches and index tables
_MASK64 = (1 << 64) - 1
_NGRAM_MULTIPLIER = 0x9E3779B97F4A7C15
_FMIX_1 = 0xFF51AFD7ED558CCD
_FMIX_2 = 0xC4CEB9FE1A85EC53
WEIGHT_SCALE = 1 << 16


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


def smooth_idf(document_frequency: np.ndarray, n_texts: int) -> np.ndarray:
    return np.log((1.0 + n_texts) / (1.0 + document_frequency)) + 1.0


def quantize(weight: np.ndarray) -> np.ndarray:
    """Weights as integer multiples of 2**-16, expressed in those units (exact floats)."""
    return np.rint(np.asarray(weight, dtype=np.float64) * WEIGHT_SCALE)


# ---------------------------------------------------------------------------
# Vectorised features
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


def _normalized_buffer(texts: Sequence[str], config: FingerprintConfig) -> tuple[bytes, np.ndarray]:
    """The texts' words as one byte buffer: text t is ``buffer[offsets[t]:offsets[t + 1]]``
    with a trailing space, words separated by ASCII spaces.

    ASCII texts are normalised by a byte table, so no per-word Python object is made;
    only the rare non-ASCII text goes through ``_units`` first.
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
    return buffer, np.concatenate(([0], np.cumsum(byte_lengths + 1)))  # each text keeps its trailing separator


def _word_unit_hashes(texts: Sequence[str], config: FingerprintConfig) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every word of every text, concatenated, and the word count per text.

    The normalised buffer is split and dictionary-encoded in Arrow; each distinct word is
    hashed once.
    """
    buffer, offsets = _normalized_buffer(texts, config)
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


def _word_counts(texts: Sequence[str]) -> np.ndarray:
    """Words per text, as ``_word_unit_hashes`` counts them, without splitting or hashing:
    a word starts at every non-space byte that follows a space."""
    buffer, offsets = _normalized_buffer(texts, FingerprintConfig())
    data = np.frombuffer(buffer, dtype=np.uint8)
    space = data == ord(" ")
    word_start = ~space & np.concatenate(([True], space[:-1]))
    return np.add.reduceat(word_start, offsets[:-1], dtype=np.int64)


def _char_unit_hashes(texts: Sequence[str], config: FingerprintConfig) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every character of every (normalised) text and the character count per text."""
    bodies = [normalize_text(text) if config.normalize else text for text in texts]
    units_per_text = np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies))
    codepoints = np.frombuffer("".join(bodies).encode("utf-32-le", "surrogatepass"), dtype="<u4")
    hash_of_codepoint = np.zeros(int(codepoints.max()) + 1 if codepoints.size else 0, dtype=np.uint64)
    for codepoint in np.flatnonzero(np.bincount(codepoints)):
        hash_of_codepoint[codepoint] = _unit_hash(chr(codepoint))
    return hash_of_codepoint[codepoints], units_per_text


def exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


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
    starts = exclusive_cumsum(units_per_text)
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
class TextFeatures:
    """A batch of texts as a sparse (texts x features) term-frequency matrix; column c is
    the feature with hash ``hashes[c]``, found in ``document_frequency[c]`` of the texts."""
    hashes: np.ndarray
    term_frequency: csr_matrix
    document_frequency: np.ndarray


def _text_features(texts: Sequence[str], config: FingerprintConfig) -> TextFeatures:
    unit_hashes = _word_unit_hashes if config.shingle == "word" else _char_unit_hashes
    feature_hashes, features_per_text = _ngram_hashes(*unit_hashes(texts, config), config.ngram)
    column, hashes = pd.factorize(feature_hashes)
    row_offsets = np.concatenate(([0], np.cumsum(features_per_text)))
    counts = csr_matrix((np.ones(len(column)), column, row_offsets), shape=(len(texts), len(hashes)))
    counts.sum_duplicates()  # repeats of a feature in one text -> its term frequency
    return TextFeatures(hashes, counts, np.bincount(counts.indices, minlength=len(hashes)))


def featurise(texts: list[str], config: FingerprintConfig, pool: ThreadPoolExecutor) -> list[TextFeatures]:
    batches = [texts[start:start + _TEXTS_PER_BATCH] for start in range(0, len(texts), _TEXTS_PER_BATCH)]
    return list(pool.map(lambda batch: _text_features(batch, config), batches))


def thread_pool(texts: Sequence[str]) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(WORKERS, -(-len(texts) // _TEXTS_PER_BATCH))))


def _batched(texts: Sequence[str], function) -> list:
    texts = list(texts)
    batches = [texts[start:start + _TEXTS_PER_BATCH] for start in range(0, len(texts), _TEXTS_PER_BATCH)]
    with thread_pool(texts) as pool:
        return list(pool.map(function, batches))


def normalized_word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every normalised word of every text (the units of word fingerprints),
    concatenated, and the word count per text; batched on the thread pool."""
    pieces = _batched(texts, lambda batch: _word_unit_hashes(batch, FingerprintConfig()))
    return (np.concatenate([hashes for hashes, _ in pieces] + [np.zeros(0, dtype=np.uint64)]),
            np.concatenate([counts for _, counts in pieces] + [np.zeros(0, dtype=np.int64)]))


def normalized_word_counts(texts: Sequence[str]) -> np.ndarray:
    """The word counts of ``normalized_word_hashes``, several times faster."""
    return np.concatenate(_batched(texts, _word_counts) + [np.zeros(0, dtype=np.int64)])


@dataclass(frozen=True)
class _FeaturePartition:
    """The distinct features (by hash) of one hash partition over all batches, with their
    document frequencies; batch ``b``'s columns ``columns[b]`` are features ``feature[b]``."""
    hashes: np.ndarray
    document_frequency: np.ndarray
    columns: list[np.ndarray]
    feature: list[np.ndarray]


def partition_features(batches: Sequence[TextFeatures], pool: ThreadPoolExecutor) -> list[_FeaturePartition]:
    """Batches' features matched across batches by hash, in ``WORKERS`` disjoint hash
    partitions merged in parallel (each merge is a pandas ``factorize``)."""
    if not batches:
        return []
    owner = [batch.hashes % np.uint64(WORKERS) for batch in batches]

    def merge(part: int) -> _FeaturePartition:
        columns = [np.flatnonzero(batch_owner == part) for batch_owner in owner]
        feature_id, hashes = pd.factorize(np.concatenate([b.hashes[c] for b, c in zip(batches, columns)]))
        document_frequency = np.bincount(
            feature_id, weights=np.concatenate([b.document_frequency[c] for b, c in zip(batches, columns)]),
            minlength=len(hashes),
        )
        return _FeaturePartition(hashes, document_frequency, columns,
                                 np.split(feature_id, np.cumsum([len(c) for c in columns])[:-1]))

    return list(pool.map(merge, range(WORKERS)))


# ---------------------------------------------------------------------------
# Idf table
# ---------------------------------------------------------------------------

def corpus_idf_weights(
    batches: Sequence[TextFeatures], partitions: Sequence[_FeaturePartition], n_texts: int
) -> list[np.ndarray]:
    """Quantised smoothed idf of every batch's features, from document frequencies over all batches."""
    weights = [np.empty(len(batch.hashes)) for batch in batches]
    for partition in partitions:
        partition_weights = quantize(smooth_idf(partition.document_frequency, n_texts))
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
        with thread_pool(texts) as pool:
            return cls.from_partitions(partition_features(featurise(texts, config, pool), pool), len(texts))

    @classmethod
    def from_partitions(cls, partitions: Sequence[_FeaturePartition], n_texts: int) -> IdfTable:
        hashes = np.concatenate([p.hashes for p in partitions] + [np.zeros(0, dtype=np.uint64)])
        frequencies = np.concatenate([p.document_frequency for p in partitions] + [np.zeros(0)])
        order = np.argsort(hashes)
        return cls(hashes[order], quantize(smooth_idf(frequencies[order], n_texts)))

    @classmethod
    def from_mapping(cls, idf: Mapping[str, float], config: FingerprintConfig) -> IdfTable:
        """A ``compute_idf``-style table of feature strings."""
        hashes = np.fromiter((feature_hash(f, config) for f in idf), dtype=np.uint64, count=len(idf))
        order = np.argsort(hashes)
        return cls(hashes[order], quantize(np.fromiter(idf.values(), dtype=np.float64, count=len(idf)))[order])

    def lookup(self, feature_hashes: np.ndarray) -> np.ndarray:
        default = self.weights.max() if len(self.weights) else quantize(1.0)
        if not len(self.hashes):
            return np.full(len(feature_hashes), default)
        slot = np.minimum(np.searchsorted(self.hashes, feature_hashes), len(self.hashes) - 1)
        return np.where(self.hashes[slot] == feature_hashes, self.weights[slot], default)
