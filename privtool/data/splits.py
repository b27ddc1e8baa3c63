"""Seeded, stratified, disjoint splits and their hashes (SPEC §3).

A split is a pure function of (labels, seed, fractions), so a run's ``meta.json``
can record each split as :func:`index_hash` and an attack can later prove which
points were members.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Mapping

import numpy as np

from privtool.errors import PrivtoolError


def index_hash(idx: np.ndarray) -> str:
    """sha256 hex of the indices as little-endian int64 bytes."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(idx), dtype="<i8").tobytes()).hexdigest()


def _largest_remainder(quotas: np.ndarray, total: int, order_noise: np.ndarray) -> np.ndarray:
    """Integers summing to ``total``, each floor or ceil of its quota (Hamilton's method)."""
    base = np.floor(quotas + 1e-9).astype(np.int64)
    extra = total - int(base.sum())
    rem = quotas - base
    order = np.lexsort((order_noise, -rem))
    base[order[:extra]] += 1
    return base


def _validate(
    y: np.ndarray, fractions: Mapping[str, float]
) -> tuple[np.ndarray, list[str], np.ndarray]:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise PrivtoolError(f"make_splits needs a non-empty 1-D label array, got shape {y.shape}")
    if not isinstance(fractions, Mapping) or not fractions:
        raise PrivtoolError(
            "make_splits needs fractions as a non-empty mapping, e.g. {'train': 0.8, 'test': 0.2}"
        )
    names = [str(k) for k in fractions]
    fr = []
    for name, f in fractions.items():
        try:
            f = float(f)
        except (TypeError, ValueError):
            raise PrivtoolError(f"split fraction {name}={f!r} is not a number") from None
        if not math.isfinite(f) or f <= 0:
            raise PrivtoolError(
                f"split fraction {name}={f} must be > 0 (drop the split instead of giving it 0)"
            )
        fr.append(f)
    fr_arr = np.asarray(fr, dtype=np.float64)
    if fr_arr.sum() > 1 + 1e-9:
        listed = ", ".join(f"{n}={f:g}" for n, f in zip(names, fr, strict=True))
        raise PrivtoolError(
            f"split fractions sum to {fr_arr.sum():.6g} > 1 ({listed}); make them sum to at most 1"
        )
    return y, names, fr_arr


def make_splits(
    y: np.ndarray, *, seed: int, fractions: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """Split ``range(len(y))`` into disjoint, class-stratified index sets.

    Split sizes are the largest-remainder rounding of ``len(y) * fraction`` (all
    points are used when the fractions sum to 1). Within that, each split gets
    from each class floor or ceil of ``n_class * fraction`` points (a controlled
    rounding of the class x split table, Cox 1987), chosen by seeded random
    permutation. Returns sorted int64 arrays keyed and ordered as ``fractions``.
    """
    y, names, fr = _validate(y, fractions)
    rng = np.random.default_rng(seed)
    classes, y_idx = np.unique(y, return_inverse=True)
    y_idx = y_idx.reshape(-1)
    n_c = np.bincount(y_idx, minlength=len(classes)).astype(np.int64)
    n, k = int(len(y)), len(fr)

    total = min(n, int(math.floor(n * fr.sum() + 0.5 + 1e-9)))
    sizes = _largest_remainder(n * fr, total, rng.random(k))
    empty = [nm for nm, s in zip(names, sizes, strict=True) if s == 0]
    if empty:
        raise PrivtoolError(
            f"split {empty[0]!r} would be empty: fraction {fr[names.index(empty[0])]:g} of {n} examples; "
            "raise the fraction or use a larger dataset"
        )

    counts = _controlled_rounding(n_c, fr, sizes, rng)

    parts: list[list[np.ndarray]] = [[] for _ in range(k)]
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(y_idx == c))
        bounds = np.concatenate([[0], np.cumsum(counts[c])])
        for j in range(k):
            parts[j].append(members[bounds[j] : bounds[j + 1]])
    return {
        nm: np.sort(np.concatenate(p)).astype(np.int64) for nm, p in zip(names, parts, strict=True)
    }


def _controlled_rounding(n_c: np.ndarray, fr: np.ndarray, sizes: np.ndarray, rng) -> np.ndarray:
    """Integer table A[c, j] with column sums ``sizes``, row sums <= n_c, and
    |A[c, j] - n_c[c] * fr[j]| <= 1 wherever a feasible assignment allows it.

    Floors the quotas, then adds single units: greedily by largest remainder,
    then along augmenting paths (re-routing earlier units), and only if that
    cannot close a column, anywhere a class still has unused points.
    """
    quota = n_c[:, None] * fr[None, :]
    a = np.floor(quota + 1e-9).astype(np.int64)
    deficit = sizes - a.sum(axis=0)
    if np.any(deficit < 0):  # cannot happen with Hamilton sizes; guard against float edge cases
        raise PrivtoolError("internal error: split rounding produced a negative deficit")
    row_quota = n_c * fr.sum()
    row_cap = np.minimum(np.ceil(row_quota - 1e-9).astype(np.int64), n_c) - a.sum(axis=1)
    row_cap = np.maximum(row_cap, 0)
    added = np.zeros_like(a)

    rem = quota - a
    cells = np.argwhere(np.ones_like(a, dtype=bool))
    order = np.lexsort((rng.random(len(cells)), -rem[cells[:, 0], cells[:, 1]]))
    for c, j in cells[order]:
        if deficit[j] > 0 and row_cap[c] > 0:
            added[c, j] = 1
            deficit[j] -= 1
            row_cap[c] -= 1

    for j in range(len(fr)):
        while deficit[j] > 0 and _augment(j, added, row_cap):
            deficit[j] -= 1

    a = a + added
    spare = n_c - a.sum(axis=1)
    for j in range(len(fr)):
        for c in np.argsort(-(quota[:, j] - a[:, j]), kind="stable"):
            take = int(min(deficit[j], spare[c]))
            a[c, j] += take
            spare[c] -= take
            deficit[j] -= take
    return a


def _augment(j0: int, added: np.ndarray, row_cap: np.ndarray) -> bool:
    """Find an alternating path giving column ``j0`` one more unit (each cell holds at most one)."""
    n_rows, n_cols = added.shape
    parent: dict[int, tuple[int, int] | None] = {j0: None}  # column -> (row, previous column)
    queue = deque([j0])
    while queue:
        j = queue.popleft()
        for c in range(n_rows):
            if added[c, j]:
                continue
            if row_cap[c] > 0:
                # free row: take it, then shift units back along the path
                row_cap[c] -= 1
                added[c, j] = 1
                while parent[j] is not None:
                    c_prev, j_prev = parent[j]
                    added[c_prev, j_prev] = 1
                    added[c_prev, j] = 0
                    j = j_prev
                return True
            for j2 in np.flatnonzero(added[c]):
                j2 = int(j2)
                if j2 not in parent:
                    parent[j2] = (c, j)
                    queue.append(j2)
    return False
