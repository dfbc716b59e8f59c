"""Near-duplicate pairs of SimHash fingerprints: a multi-table index with exact
verification (self joins, cross joins, nearest reference), and clusters of near-duplicates.

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

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from tasks.dedup.features import WORKERS, exclusive_cumsum
from tasks.dedup.fingerprint import as_fingerprints, byte_planes, hamming


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


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` via a plain sort: numpy 2's hash-based unique is ~5x slower on
    millions of int64 codes with many repeats."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


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
    row_position = np.repeat(run_first - exclusive_cumsum(rows_per_run), rows_per_run) + np.arange(rows_per_run.sum())
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
        offsets = np.arange(len(rows)) - np.repeat(exclusive_cumsum(counts), counts)
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

    shares = [plan.tables[w::WORKERS] for w in range(WORKERS) if plan.tables[w::WORKERS]]
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
    member = np.arange(len(pair)) - np.repeat(exclusive_cumsum(counts), counts)
    width = right.size[right_group][pair]
    a = left.order[left.start[left_group][pair] + member // width]
    b = right.order[right.start[right_group][pair] + member % width]
    return a, b


def pairs_array(a: np.ndarray, b: np.ndarray, width: int) -> np.ndarray:
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
    fps = as_fingerprints(fps)
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
    planes = byte_planes(values).astype(np.intp)
    codes = _run_tables(plan, lambda positions: _self_table_codes(values, planes, positions, tau))
    a, b = _expand_group_pairs(groups, groups, codes // len(values), codes % len(values))
    pieces_a, pieces_b = [np.minimum(a, b)], [np.maximum(a, b)]
    shared = groups.size > 1  # rows with identical fingerprints pair up among themselves
    for first, second in _bucket_pairs(groups.start[shared], groups.start[shared] + groups.size[shared] - 1, 1):
        pieces_a.append(groups.order[first])  # members are in ascending row order
        pieces_b.append(groups.order[second])
    return pairs_array(np.concatenate(pieces_a), np.concatenate(pieces_b), len(fps))


def cross_pairs(
    query_fps: np.ndarray, reference_fps: np.ndarray, tau: int, *, miss_probability: float = 1e-4, seed: int = 0
) -> np.ndarray:
    """Pairs (query_idx, ref_idx) with distance <= tau, sorted, int64 (k, 2); same
    guarantees as ``near_duplicate_pairs``."""
    tau = _check_join_arguments(tau, miss_probability)
    query, reference = as_fingerprints(query_fps), as_fingerprints(reference_fps)
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
    query_planes, reference_planes = byte_planes(query).astype(np.intp), byte_planes(reference).astype(np.intp)
    codes = _run_tables(
        plan,
        lambda positions: _cross_table_codes(query, reference, query_planes, reference_planes, positions, tau),
    )
    a, b = _expand_group_pairs(query_groups, reference_groups, codes // len(reference), codes % len(reference))
    return pairs_array(a, b, len(reference_groups.order))


def nearest_within(
    query_fps: np.ndarray, reference_fps: np.ndarray, tau: int, *, miss_probability: float = 1e-4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: index of the closest reference within ``tau`` (ties -> smallest
    index) and its distance; -1 and -1 where none is found."""
    query, reference = as_fingerprints(query_fps), as_fingerprints(reference_fps)
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
