"""What each kind of attack is scored by, which way is "more leakage", and the uncertainty
of each score — read from the attack's result (:mod:`privtool.results`, its metrics.json) and
its directory's own files, never recomputed from models.

An attack's ``metrics.json: kind`` picks its row of :data:`SCORES`; a new attack of an existing
kind needs nothing here, a new kind adds one entry.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from privtool.results import (
    AttackResult,
    InversionResult,
    MembershipResult,
    ReconstructionResult,
)

Interval = tuple[Optional[float], Optional[float]]


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def _column(path: Path, name: str) -> np.ndarray | None:
    """One numeric column of a CSV the attack wrote (None if the file or column is absent)."""
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        vals = [float(r[name]) for r in rows if r.get(name) not in (None, "")]
    except (KeyError, ValueError):
        return None
    arr = np.asarray(vals, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return arr if arr.size else None


def auc_interval(r: MembershipResult, attack_dir: Path, confidence: float) -> Interval:
    """Hanley & McNeil 1982 standard error of a ROC AUC from n_in members and n_out
    non-members: SE² = (A(1−A) + (n₁−1)(Q₁−A²) + (n₂−1)(Q₂−A²)) / (n₁n₂), Q₁ = A/(2−A),
    Q₂ = 2A²/(1+A); the interval is A ± z·SE clipped to [0, 1]."""
    a, n1, n2 = r.scores.auc, r.scores.n_in, r.scores.n_out
    if a is None or not n1 or not n2:
        return None, None
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2)
    se = math.sqrt(max(var, 0.0))
    z = _z(confidence)
    return max(0.0, a - z * se), min(1.0, a + z * se)


def tpr_interval(r: MembershipResult, attack_dir: Path, confidence: float) -> Interval:
    """Clopper–Pearson interval of TPR = k/n_in at the attack's 0.1 % FPR threshold."""
    from scipy.stats import beta

    t, n = r.scores.tpr_at(0.001), r.scores.n_in
    if t is None or not n:
        return None, None
    k, a = round(t * n), 1 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def epsilon_lb_interval(r: MembershipResult, attack_dir: Path, confidence: float) -> Interval:
    """The audit's own interval: the Clopper–Pearson lower bound (one-sided by default, the
    test named by ``epsilon_lower_bound_sides`` / ``_direction``) and the upper end of the
    two-sided confidence interval at the same threshold (``epsilon_lower_bound_ci_high``;
    None = unbounded)."""
    return r.scores.epsilon.value, r.scores.epsilon.ci_high


def ssim_interval(r: ReconstructionResult, attack_dir: Path, confidence: float) -> Interval:
    """Mean SSIM ± z·sd/√n over the reconstructed images."""
    s, sd, n = r.ssim, r.ssim_std, r.n_images
    if s is None or sd is None or not n or n < 2:
        return None, None
    half = _z(confidence) * sd / math.sqrt(n)
    return s - half, s + half


def median_interval(values: np.ndarray | None, confidence: float) -> Interval:
    """Distribution-free interval of a median: order statistics x_(j) ≤ med ≤ x_(n−j+1), j
    the largest with P(j ≤ Bin(n, ½) ≤ n − j) ≥ confidence; below n = 6 (at 95 %) no
    such j exists and the interval is the whole range."""
    from scipy.stats import binom

    if values is None or values.size < 2:
        return None, None
    x, n = np.sort(values), values.size
    best = None
    for j in range(1, n // 2 + 1):  # 1-based rank of the lower order statistic
        cover = binom.cdf(n - j, n, 0.5) - binom.cdf(j - 1, n, 0.5)
        if cover >= confidence:
            best = j
        else:
            break
    if best is None:
        return float(x[0]), float(x[-1])
    return float(x[best - 1]), float(x[n - best])


def mse_interval(r: ReconstructionResult, attack_dir: Path, confidence: float) -> Interval:
    """Interval of the median MSE from the per-image scores in ``per_target.csv``."""
    return median_interval(_column(attack_dir / "per_target.csv", "mse"), confidence)


def mean_interval(values: np.ndarray | None, confidence: float) -> Interval:
    if values is None or values.size < 2:
        return None, None
    half = _z(confidence) * float(values.std(ddof=1)) / math.sqrt(values.size)
    m = float(values.mean())
    return m - half, m + half


def mia_distance_interval(r: InversionResult, attack_dir: Path, confidence: float) -> Interval:
    """Mean MIA distance ± z·sd/√K over the K inverted classes (``per_class.csv``)."""
    return mean_interval(_column(attack_dir / "per_class.csv", "mia_distance"), confidence)


@dataclass(frozen=True)
class Score:
    """One number an attack reports: ``key`` (its metrics.json key, the column's name),
    ``value`` (read off the attack's result object), and its ``interval``. ``leak`` is +1 where
    a larger value means the attack learned more (AUC, SSIM) and −1 where smaller does (MSE,
    MIA distance)."""

    key: str
    label: str
    leak: int
    value: Callable[[Any], Any]
    interval: Callable[[Any, Path, float], Interval]
    #: files of the attack directory the interval reads (their hashes are checked)
    reads: tuple[str, ...] = ()

    def of(self, result: AttackResult, attack_dir: Path, confidence: float) -> tuple[Any, ...]:
        """(value, low, high) of this score in ``result``; no interval without a value."""
        v = self.value(result)
        lo, hi = self.interval(result, attack_dir, confidence) if v is not None else (None, None)
        return v, lo, hi


SCORES: dict[str, tuple[Score, ...]] = {
    "membership": (
        Score("auc", "AUC", +1, lambda r: r.scores.auc, auc_interval),
        Score(
            "tpr_at_0.1pct_fpr", "TPR@0.1%FPR", +1, lambda r: r.scores.tpr_at(0.001), tpr_interval
        ),
        Score(
            "epsilon_lower_bound",
            "ε lower bound",
            +1,
            lambda r: r.scores.epsilon.value,
            epsilon_lb_interval,
        ),
    ),
    "reconstruction": (
        Score("ssim", "SSIM (mean)", +1, lambda r: r.ssim, ssim_interval),
        Score("mse", "MSE (median)", -1, lambda r: r.mse, mse_interval, reads=("per_target.csv",)),
    ),
    "inversion": (
        Score(
            "mia_distance",
            "MIA distance",
            -1,
            lambda r: r.mia_distance,
            mia_distance_interval,
            reads=("per_class.csv",),
        ),
    ),
}


def score(kind: str, key: str) -> Score:
    for s in SCORES[kind]:
        if s.key == key:
            return s
    raise KeyError(f"{kind} attacks have no score {key!r}")
