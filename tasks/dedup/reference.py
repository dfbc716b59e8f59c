"""Readable per-text references of the vectorised SimHash code, for comparison only
(no build uses them): the tests pin ``IdfTable.fit`` and ``fingerprints`` to them, and
they hand our exact weighted features to the ``simhash`` package (tests and
``bench/dedup_bench.py``, which is installed with the package and so cannot import tests/).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import chain

import numpy as np

from tasks.dedup.features import WEIGHT_SCALE, FingerprintConfig, quantize, shingles, smooth_idf


def compute_idf(texts: Sequence[str], config: FingerprintConfig) -> dict[str, float]:
    """Smoothed idf of every feature of ``texts``, by feature string: the readable reference
    for ``IdfTable.fit``, which computes the same table vectorised (and which builds use)."""
    document_frequency = Counter(chain.from_iterable(set(shingles(t, config)) for t in texts))
    features = list(document_frequency)
    values = smooth_idf(np.array([document_frequency[f] for f in features], dtype=np.float64), len(texts))
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
    quantized = quantize(known) / WEIGHT_SCALE
    return {f: term_frequency[f] * float(q) for f, q in zip(features, quantized)}
