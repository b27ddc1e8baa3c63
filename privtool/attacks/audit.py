"""Scoring a membership attack: ROC, AUC, TPR at low FPR, balanced accuracy, empirical ε.

Pure numpy/scipy over two arrays, the attack's scores of members and of non-members
(higher score = "member"), so every membership attack is scored the same way.

The empirical ε lower bound follows Jagielski et al. 2020 (Alg. 2) and jax_privacy's
``CanaryScoreAuditor.epsilon_clopper_pearson``: an (ε, δ)-DP training algorithm forces every
threshold test to satisfy ``TPR ≤ e^ε·FPR + δ`` and ``TNR ≤ e^ε·FNR + δ`` (Kairouz et al.
2015), so with Clopper–Pearson upper bounds on FPR and FNR (each at significance
(1 − confidence)/2),

    one-sided (the default, as jax_privacy's ``one_sided=True``): the attack's claim
    "member" tested, ε_lb = max_t log((1 − δ − FNR_u(t)) / FPR_u(t));
    two-sided: also the second inequality, "non-member" as the positive class,
    ε_lb = max_t max( log((1 − δ − FNR_u(t)) / FPR_u(t)),  log((1 − δ − FPR_u(t)) / FNR_u(t)) ).

The result names its sides and the direction that gave it (``epsilon_lower_bound_direction``).

The maximum over thresholds is taken with a Bonferroni correction over the thresholds on the
ROC's upper convex hull (jax_privacy's default; both ratios peak there), so the bound holds at
the stated confidence for the chosen threshold and direction too. Caveat (Steinke et al.
2023): in the one-run setting the D_in/D_out points share one training run, so they are not
independent trials; the many-run
canary audit (:func:`audit_epsilon` over per-model scores of one point) is the exact one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from privtool.errors import PrivtoolError
from privtool.results import LOW_FPRS


@dataclass(frozen=True)
class Roc:
    """An ROC curve: member iff score ≥ ``thresholds[i]`` gives (``fpr[i]``, ``tpr[i]``); the
    first point is (0, 0) (threshold +∞), the last (1, 1). ``tp``/``fp`` are the counts."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_in: int
    n_out: int


def _split(scores: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    m = np.asarray(member, dtype=bool).ravel()
    if s.shape != m.shape:
        raise PrivtoolError(f"scores ({s.size}) and membership labels ({m.size}) differ in length")
    if not np.isfinite(s).all():
        raise PrivtoolError("attack scores contain NaN or infinite values")
    if m.all() or not m.any():
        raise PrivtoolError("scoring an attack needs both members and non-members")
    return s, m


def roc_curve(scores: Any, member: Any) -> Roc:
    """The exact empirical ROC over every distinct score (ties form one step)."""
    s, m = _split(scores, member)
    order = np.argsort(-s, kind="mergesort")
    s, m = s[order], m[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each tie group
    tp = np.r_[0, np.cumsum(m)[last]]
    fp = np.r_[0, np.cumsum(~m)[last]]
    n_in, n_out = int(tp[-1]), int(fp[-1])
    return Roc(
        fpr=fp / n_out,
        tpr=tp / n_in,
        thresholds=np.r_[np.inf, s[last]],
        tp=tp.astype(np.int64),
        fp=fp.astype(np.int64),
        n_in=n_in,
        n_out=n_out,
    )


def auc(roc: Roc) -> float:
    """Area under the ROC (trapezoids: a tie counts one half, as Mann–Whitney's U)."""
    return float(np.sum(np.diff(roc.fpr) * (roc.tpr[1:] + roc.tpr[:-1]) / 2))


def tpr_at_fpr(roc: Roc, fpr: float) -> float:
    """The largest TPR of a threshold whose FPR is strictly below ``fpr`` (Carlini et al.
    2022's "TPR at low FPR", as LiRA's code computes it: ``tpr[np.where(fpr < .001)[0][-1]]``;
    no interpolation between thresholds). With n non-members, "TPR at 0.1% FPR" thus allows no
    false positive at n = 1000."""
    if not 0 < fpr <= 1:
        raise PrivtoolError(f"fpr={fpr!r} is not allowed: a number in (0, 1]")
    ok = roc.fpr < fpr
    return float(roc.tpr[ok].max())


def balanced_accuracy(roc: Roc) -> float:
    """Best balanced accuracy ½(TPR + TNR) over thresholds (the attack's accuracy on a
    balanced evaluation set at its best threshold)."""
    return float(np.max((roc.tpr + 1 - roc.fpr) / 2))


def clopper_pearson(k: Any, n: int, significance: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Clopper–Pearson bounds on a binomial rate from ``k`` successes in ``n``:
    (lower, upper), each failing with probability at most ``significance``."""
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, beta.ppf(significance, k, n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - significance, k + 1, n - k), 1.0)
    return lo, hi


def roc_hull(roc: Roc) -> np.ndarray:
    """Indices of the ROC points on its upper convex hull (where ε's ratios peak)."""
    hull: list[int] = []
    for i in range(len(roc.fpr)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (roc.fpr[b] - roc.fpr[a]) * (roc.tpr[i] - roc.tpr[a]) - (
                roc.tpr[b] - roc.tpr[a]
            ) * (roc.fpr[i] - roc.fpr[a])
            if cross >= 0:  # b is on or below the chord a-i
                hull.pop()
            else:
                break
        hull.append(i)
    return np.asarray(hull, dtype=np.int64)


def _ratio(pos: np.ndarray, neg: np.ndarray, delta: float) -> np.ndarray:
    """log((pos − δ)/neg) per threshold, clipped at 0 (0 where pos ≤ δ)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(pos > delta, np.log(np.maximum(pos - delta, 1e-300)) - np.log(neg), 0.0)
    return np.maximum(np.nan_to_num(a, nan=0.0, posinf=np.inf), 0.0)


#: the tests of each side: (direction label, uses (TPR, FPR) if True else (TNR, FNR))
SIDES = {
    "one-sided": (("member: TPR/FPR", True),),
    "two-sided": (("member: TPR/FPR", True), ("non-member: TNR/FNR", False)),
}


def epsilon_lower_bound(
    roc: Roc, *, confidence: float, delta: float, sides: str = "one-sided"
) -> dict[str, float | str | None]:
    """Empirical ε lower bound (Jagielski et al. 2020) with a Clopper–Pearson interval.

    Returns ``epsilon_lower_bound`` (holds with probability ≥ ``confidence``), the point
    estimate from the raw rates at the same threshold (``epsilon_lower_bound_point``) and the
    upper end of the two-sided interval there (``epsilon_lower_bound_ci_high``; None = ∞), plus
    that threshold's FPR/TPR, ``sides`` (one-sided: TPR ≤ e^ε·FPR + δ only; two-sided: also
    TNR ≤ e^ε·FNR + δ) and the direction that gave the bound.
    """
    if not 0 < confidence < 1:
        raise PrivtoolError(f"confidence={confidence!r} is not allowed: a number in (0, 1)")
    if not 0 <= delta < 1:
        raise PrivtoolError(f"delta={delta!r} is not allowed: a number in [0, 1)")
    if sides not in SIDES:
        raise PrivtoolError(f"epsilon_sides={sides!r} is not allowed: {' or '.join(SIDES)}")
    idx = roc_hull(roc)
    sig = (1 - confidence) / 2 / len(idx)  # two rates, Bonferroni over the hull thresholds
    fp, tp = roc.fp[idx], roc.tp[idx]
    fn = roc.n_in - tp
    fpr_lo, fpr_hi = clopper_pearson(fp, roc.n_out, sig)
    fnr_lo, fnr_hi = clopper_pearson(fn, roc.n_in, sig)
    rates = {
        "lower": (fpr_hi, fnr_hi),
        "high": (fpr_lo, fnr_lo),
        "point": (fp / roc.n_out, fn / roc.n_in),
    }

    def side(kind: str, members: bool) -> np.ndarray:
        f, g = rates[kind]
        return _ratio(1 - g, f, delta) if members else _ratio(1 - f, g, delta)

    # the first side wins ties, so a two-sided bound names the member side when they agree
    direction, members = max(SIDES[sides], key=lambda d: side("lower", d[1]).max())
    lower = side("lower", members)
    best = int(np.argmax(lower))
    point = side("point", members)[best]
    high = side("high", members)[best]
    return {
        "epsilon_lower_bound": float(lower[best]),
        "epsilon_lower_bound_point": float(point) if np.isfinite(point) else None,
        "epsilon_lower_bound_ci_high": float(high) if np.isfinite(high) else None,
        "epsilon_lower_bound_fpr": float(roc.fpr[idx[best]]),
        "epsilon_lower_bound_tpr": float(roc.tpr[idx[best]]),
        "epsilon_lower_bound_confidence": float(confidence),
        "epsilon_lower_bound_delta": float(delta),
        "epsilon_lower_bound_sides": sides,
        "epsilon_lower_bound_direction": direction,
    }


def audit_epsilon(
    scores_in: Any,
    scores_out: Any,
    *,
    confidence: float = 0.95,
    delta: float = 1e-5,
    sides: str = "one-sided",
) -> float:
    """ε lower bound from scores of one canary in models trained with it (``scores_in``) and
    without it (``scores_out``): the classic many-run audit (Jagielski et al. 2020)."""
    s_in, s_out = np.asarray(scores_in, float).ravel(), np.asarray(scores_out, float).ravel()
    roc = roc_curve(np.r_[s_in, s_out], np.r_[np.ones(s_in.size, bool), np.zeros(s_out.size, bool)])
    return epsilon_lower_bound(roc, confidence=confidence, delta=delta, sides=sides)[
        "epsilon_lower_bound"
    ]


def score_attack(
    scores: Any, member: Any, *, confidence: float, delta: float, sides: str = "one-sided"
) -> tuple[dict[str, Any], Roc]:
    """Every number SPEC §6 asks of a membership attack, and the ROC they come from."""
    roc = roc_curve(scores, member)
    metrics: dict[str, Any] = {"auc": auc(roc), "balanced_accuracy": balanced_accuracy(roc)}
    metrics.update({k: tpr_at_fpr(roc, f) for k, f in LOW_FPRS.items()})
    metrics.update(epsilon_lower_bound(roc, confidence=confidence, delta=delta, sides=sides))
    metrics.update({"n_in": roc.n_in, "n_out": roc.n_out})
    return metrics, roc


def roc_rows(roc: Roc, max_points: int = 2001) -> list[dict[str, float]]:
    """ROC as CSV rows (fpr, tpr, threshold), thinned to at most ``max_points`` while keeping
    both ends and the low-FPR region."""
    n = len(roc.fpr)
    if n > max_points:
        keep = np.unique(
            np.r_[
                np.arange(min(n, max_points // 4)),
                np.linspace(0, n - 1, max_points - max_points // 4).round().astype(int),
                n - 1,
            ]
        )
    else:
        keep = np.arange(n)
    return [
        {
            "fpr": float(roc.fpr[i]),
            "tpr": float(roc.tpr[i]),
            "threshold": float(roc.thresholds[i]) if np.isfinite(roc.thresholds[i]) else None,
        }
        for i in keep
    ]


def plot_roc(path: Any, curves: dict[str, Roc], title: str) -> None:
    """ROC curves, linear and log-log (low FPR matters: Carlini et al. 2022, Fig. 1), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, log in zip(axes, (False, True)):
        for label, roc in curves.items():
            ax.plot(roc.fpr, roc.tpr, lw=1.5, label=f"{label} (AUC {auc(roc):.3f})")
        lim = 1.0 / max(max(r.n_out for r in curves.values()), 1)
        ax.plot([lim if log else 0, 1], [lim if log else 0, 1], "k--", lw=0.8, label="chance")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(lim, 1)
            ax.set_ylim(lim, 1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
