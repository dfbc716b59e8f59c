"""The second near-duplicate method (``dedup.method: minhash``): datasketch MinHash-LSH
over the same features as SimHash.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.dedup.features import FingerprintConfig, shingles
from tasks.dedup.index import pairs_array


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
    return pairs_array(first_rows[keep], second_rows[keep], len(signatures))
