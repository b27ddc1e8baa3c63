"""Equivalent ε: the baseline mechanism's ε whose attack success matches a run's.

Pure numpy. The baseline runs give points (ε_i, s_i) of one attack score; the score should
grow with ε (more leakage), but measured scores are noisy, so they are first made monotone by
isotonic regression (pool-adjacent-violators, weighted by the number of runs at each ε) and
then interpolated linearly in log ε. Inverting that curve at a run's score gives its
equivalent ε; inverting it at both ends of the score's interval gives the ε range whose
baseline score lies inside the run's interval. Where the curve is flat (every Gaussian ε
scores the same AUC) the preimage is a whole range, and the point estimate is its geometric
middle; where a score falls outside the curve the answer is one-sided ("≤ smallest ε tried",
"≥ largest ε tried") rather than an extrapolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


def isotonic(
    x: Sequence[float], y: Sequence[float], weights: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing least-squares fit of ``y`` on sorted distinct ``x`` (equal x pooled
    first); returns (distinct x, fitted y)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    x, y, w = x[order], y[order], w[order]
    xs, inv = np.unique(x, return_inverse=True)
    wsum = np.bincount(inv, weights=w)
    ymean = np.bincount(inv, weights=w * y) / wsum
    # pool adjacent violators: blocks of (mean, weight, length)
    means: list[float] = []
    wts: list[float] = []
    lens: list[int] = []
    for m, wt in zip(ymean, wsum):
        means.append(float(m))
        wts.append(float(wt))
        lens.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m2, w2, l2 = means.pop(), wts.pop(), lens.pop()
            m1, w1, l1 = means.pop(), wts.pop(), lens.pop()
            means.append((m1 * w1 + m2 * w2) / (w1 + w2))
            wts.append(w1 + w2)
            lens.append(l1 + l2)
    fitted = np.repeat(means, lens)
    return xs, fitted


def _first_at_least(xs: np.ndarray, ys: np.ndarray, v: float) -> float:
    """min{x : f(x) ≥ v} for the piecewise-linear non-decreasing f through (xs, ys);
    ``xs[-1]`` where v is above the curve."""
    i = int(np.searchsorted(ys, v, side="left"))
    if i == 0:
        return float(xs[0])
    if i == len(ys):
        return float(xs[-1])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(x0 + (v - y0) / (y1 - y0) * (x1 - x0))


def _last_at_most(xs: np.ndarray, ys: np.ndarray, v: float) -> float:
    """max{x : f(x) ≤ v}; ``xs[0]`` where v is below the curve."""
    i = int(np.searchsorted(ys, v, side="right")) - 1
    if i < 0:
        return float(xs[0])
    if i == len(ys) - 1:
        return float(xs[-1])
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    return float(x0 + (v - y0) / (y1 - y0) * (x1 - x0))


@dataclass(frozen=True)
class Equivalent:
    """``relation`` is "≈" (inside the baseline's range), "≤" (the run leaks less than the
    smallest baseline ε tried: ``epsilon`` is that ε) or "≥" (more than the largest).
    ``low``/``high`` bound the baseline ε whose score lies in the run's score interval; None
    means beyond the ε range the baseline runs cover."""

    epsilon: float
    relation: str
    low: Optional[float]
    high: Optional[float]
    n_points: int
    epsilon_min: float  # the baseline's ε range
    epsilon_max: float

    def text(self) -> str:
        """ "≈ 2.3 [1.1, 5]", with "< ε_min" / "> ε_max" for open ends."""
        lo = "< " + _g(self.epsilon_min) if self.low is None else _g(self.low)
        hi = "> " + _g(self.epsilon_max) if self.high is None else _g(self.high)
        return f"{self.relation} {_g(self.epsilon)} [{lo}, {hi}]"


def _g(v: float) -> str:
    return f"{v:.3g}"


def equivalent_epsilon(
    epsilons: Sequence[float],
    scores: Sequence[float],
    value: float,
    *,
    interval: tuple[Optional[float], Optional[float]] = (None, None),
    leak: int = 1,
) -> Equivalent | None:
    """The baseline ε whose (monotone, log-ε-interpolated) score equals ``value``.

    ``epsilons``/``scores``: the baseline runs (ε > 0 and finite; others are ignored).
    ``leak`` +1: the score grows with leakage (AUC), −1: it shrinks (MSE). ``interval``: the
    run's score interval (None ends: the point itself). None when fewer than two distinct
    baseline ε remain.
    """
    pts = [
        (math.log(e), leak * s)
        for e, s in zip(epsilons, scores)
        if e is not None and s is not None and math.isfinite(e) and e > 0 and math.isfinite(s)
    ]
    if len({p[0] for p in pts}) < 2:
        return None
    xs, ys = isotonic([p[0] for p in pts], [p[1] for p in pts])
    exact = {
        math.log(e): float(e) for e in epsilons if e is not None and math.isfinite(e) and e > 0
    }

    def exp(x: float) -> float:  # the baseline's own ε where x is one of its points
        return exact.get(x, math.exp(x))

    v = leak * value
    lo_raw, hi_raw = interval
    lo_raw = value if lo_raw is None else lo_raw
    hi_raw = value if hi_raw is None else hi_raw
    lo, hi = sorted((leak * lo_raw, leak * hi_raw))
    lo, hi = min(lo, v), max(hi, v)
    if v < ys[0]:
        relation, x = "≤", float(xs[0])
    elif v > ys[-1]:
        relation, x = "≥", float(xs[-1])
    else:
        relation = "≈"
        x = (_first_at_least(xs, ys, v) + _last_at_most(xs, ys, v)) / 2
    low = None if lo < ys[0] else exp(_first_at_least(xs, ys, lo))
    high = None if hi > ys[-1] else exp(_last_at_most(xs, ys, hi))
    return Equivalent(
        epsilon=exp(x),
        relation=relation,
        low=low,
        high=high,
        n_points=len(pts),
        epsilon_min=exp(float(xs[0])),
        epsilon_max=exp(float(xs[-1])),
    )
