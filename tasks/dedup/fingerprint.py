"""SimHash fingerprints of texts from their weighted features, and Hamming distances.

Bit ``b`` of a fingerprint is 1 iff the features with bit ``b`` set carry more than half of
the text's total weight (the ``simhash`` package's rule, ties -> 0); ``features`` says
what the features and their weights are. Weights are multiples of 2**-16, so every sum is
exact and the bits do not depend on summation order, machine or library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.sparse import csr_matrix

from tasks.dedup.features import (
    FingerprintConfig, IdfTable, TextFeatures, corpus_idf_weights, featurise, partition_features, thread_pool,
)


# Row v: the 8 bits of byte value v, least significant first.
_BYTE_BITS = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.float64)
_BIT_VALUES = 1 << np.arange(8, dtype=np.uint64)


def byte_planes(fps: np.ndarray) -> np.ndarray:
    """(8, n) contiguous uint8: byte b of every fingerprint in row b."""
    return np.ascontiguousarray(fps.astype("<u8").view(np.uint8).reshape(-1, 8).T)


def _simhash(batch: TextFeatures, feature_weights: np.ndarray, bits: int) -> np.ndarray:
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
    hash_byte_planes = byte_planes(np.take(batch.hashes, matrix.indices))
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
    with thread_pool(texts) as pool:
        batches = featurise(texts, config, pool)
        if config.weighting == "tf":
            feature_weights = [np.ones(len(batch.hashes)) for batch in batches]
        elif table is not None:
            feature_weights = list(pool.map(lambda batch: table.lookup(batch.hashes), batches))
        else:
            feature_weights = corpus_idf_weights(batches, partition_features(batches, pool), len(texts))
        return _fingerprint_bits(batches, feature_weights, config, pool)


def fit_and_fingerprint(texts: Sequence[str], config: FingerprintConfig) -> tuple[IdfTable, np.ndarray]:
    """``IdfTable.fit(texts, config)`` and ``fingerprints(texts, config)`` in one pass."""
    texts = list(texts)
    with thread_pool(texts) as pool:
        batches = featurise(texts, config, pool)
        partitions = partition_features(batches, pool)
        feature_weights = corpus_idf_weights(batches, partitions, len(texts))
        table = IdfTable.from_partitions(partitions, len(texts))
        return table, _fingerprint_bits(batches, feature_weights, config, pool)


def _fingerprint_bits(batches: Sequence[TextFeatures], feature_weights: Sequence[np.ndarray],
                      config: FingerprintConfig, pool: ThreadPoolExecutor) -> np.ndarray:
    pieces = pool.map(lambda batch, weights: _simhash(batch, weights, config.bits), batches, feature_weights)
    return np.concatenate([*pieces, np.zeros(0, dtype=np.uint64)])


# ---------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------

def as_fingerprints(values: np.ndarray | Sequence[int]) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"fingerprints must be one-dimensional, got shape {array.shape}")
    return array if array.dtype == np.uint64 else array.astype(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise (broadcasting) popcount of ``a ^ b`` as uint8."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))
