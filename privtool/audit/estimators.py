"""ε lower bounds from canary scores: one run (Steinke et al. 2023) and many runs.

Every estimator takes canary scores (higher = "the canary was in") and the canaries' true
inclusion bits, and returns an ε lower bound that holds with probability ≥ ``confidence``
(over the randomness of the canary inclusion and of the mechanism) for the stated δ, *if* the
audited algorithm is (ε, δ)-DP with respect to changing one canary's inclusion. Which pair of
datasets that is (add/remove the canary, or replace it by its "out" twin) is the audit's
design (:mod:`privtool.audit.canaries`); the estimators only need that each canary's inclusion
is an independent fair coin and that flipping one coin is a neighbouring change.

One run — Steinke, Nasr & Jagielski 2023, "Privacy auditing with one (1) training run",
Theorem 5.2 (exact p-value, with δ): m canaries, each included independently with probability
½. The guesser makes r guesses (in/out; it abstains on the other m − r) and v of them are
right. If the algorithm is (ε, δ)-DP in each canary, then with q = e^ε/(1 + e^ε),

    P[V ≥ v] ≤ β + 2·m·δ·α,   β = P[Bin(r, q) ≥ v],
    α = max_{i=1..v} P[v > Bin(r, q) ≥ v − i] / i,

so p(ε) = min(1, β + 2mδα) is a p-value for the null "(ε, δ)-DP"; ε_lb is the largest ε whose
p-value is ≤ 1 − confidence. p(ε) increases with ε, so ε_lb is found by bracketing + Brent.
The guesser guesses "in" for the k highest scores (one-sided, the direction the attack targets)
or, two-sided, "in" for the ⌈k/2⌉ highest and "out" for the ⌊k/2⌋ lowest. k is fixed by the
caller, or chosen as the best of a grid; then every grid point is tested at significance
(1 − confidence)/|grid| (union bound), so the maximum is a valid bound at ``confidence``.

Many runs — Jagielski et al. 2020 / Nasr et al. 2023: R independent training runs, each canary
included independently (prob. ½) in each. For one canary its R (score, in/out) pairs are
independent trials, so the Clopper–Pearson bounds on FPR/FNR of any threshold are exact
(:func:`privtool.attacks.audit.epsilon_lower_bound`, Bonferroni over the ROC hull) and the
Gaussian-DP fit of Nasr et al. 2023 (μ = Φ⁻¹(1 − FPR_u) − Φ⁻¹(FNR_u) over thresholds,
Bonferroni over 2·|hull|; ε from μ-GDP at δ by Dong, Roth & Su 2019, Cor. 2.13) is a second
bound — a bound only under Nasr et al.'s assumption that the mechanism's trade-off curve is
Gaussian (true of DP-SGD's Gaussian noise in the many-step limit; not of, e.g., randomized
response, where it can exceed the true ε). The Clopper–Pearson bound assumes nothing. With M canaries per run, each canary is its own audit and the reported bound is the
largest, each tested at significance (1 − confidence)/M (union bound), so it too holds at
``confidence``. Canaries of one run are not independent trials of each other, so pooling them
into one Clopper–Pearson interval would not be sound; it is never done here.

Cross-checked against jax_privacy 2.0.0 ``auditing.CanaryScoreAuditor`` (``epsilon_one_run``
with an explicit threshold, ``epsilon_clopper_pearson``, ``epsilon_from_gdp``) in
tests/fixtures/audit/jax_privacy.json.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privtool.errors import PrivtoolError

#: guesses k the one-run estimator tries when the caller fixes none (capped at m)
DEFAULT_K_GRID = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def _check_level(confidence: float, delta: float) -> None:
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise PrivtoolError(f"confidence={confidence!r} is not allowed: a number in (0, 1)")
    if not (isinstance(delta, (int, float)) and 0 <= delta < 1):
        raise PrivtoolError(f"delta={delta!r} is not allowed: a number in [0, 1)")


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Steinke et al. 2023 Thm 5.2: p-value of "(ε, δ)-DP" after v right of r guesses on m
    canaries (each in with probability ½)."""
    from scipy.special import expit
    from scipy.stats import binom

    if not 0 <= v <= r <= m:
        raise PrivtoolError(
            f"one-run audit needs 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})"
        )
    if v == 0:
        return 1.0
    q = float(expit(epsilon))
    beta = float(binom.sf(v - 1, r, q))
    if delta == 0:
        return min(beta, 1.0)
    i = np.arange(1, v + 1)
    window = binom.sf(v - i - 1, r, q) - beta  # P[v − i ≤ Bin(r, q) < v]
    alpha = float(np.max(window / i))
    return min(1.0, beta + 2.0 * m * delta * alpha)


def one_run_epsilon(m: int, r: int, v: int, *, significance: float, delta: float) -> float:
    """The largest ε whose one-run p-value is ≤ ``significance`` (0 if even ε = 0 is not
    rejected)."""
    from scipy.optimize import brentq

    def gap(eps: float) -> float:  # > 0 while (ε, δ)-DP is rejected
        return significance - one_run_p_value(m, r, v, eps, delta)

    if gap(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while gap(hi) > 0:
        lo, hi = hi, hi * 2
        if hi > 1e4:  # every guess right and m huge; never reached for m < 10^8
            return lo
    return float(brentq(gap, lo, hi, xtol=1e-9))


def _split_scores(scores: Any, member: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    b = np.asarray(member).ravel()
    if s.shape != b.shape:
        raise PrivtoolError(
            f"canary scores ({s.size}) and inclusion bits ({b.size}) differ in length"
        )
    if s.size == 0:
        raise PrivtoolError("the audit has no canaries")
    if not np.isfinite(s).all():
        raise PrivtoolError("canary scores contain NaN or infinite values")
    return s, b.astype(bool)


def _guess(scores: np.ndarray, member: np.ndarray, k: int, two_sided: bool) -> tuple[int, int]:
    """(guesses, right): "in" for the top k (two-sided: top ⌈k/2⌉ in, bottom ⌊k/2⌋ out).
    Ties are broken by a fixed stable order, which depends on the scores only."""
    order = np.argsort(-scores, kind="stable")
    k_in = (k + 1) // 2 if two_sided else k
    k_out = k - k_in
    right = int(member[order[:k_in]].sum())
    if k_out:
        right += int((~member[order[len(order) - k_out :]]).sum())
    return k, right


@dataclass(frozen=True)
class OneRunResult:
    epsilon_lb: float
    guesses: int
    correct: int
    canaries: int
    confidence: float
    delta: float
    two_sided: bool
    grid: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "epsilon_lb": self.epsilon_lb,
            "guesses": self.guesses,
            "correct": self.correct,
            "canaries": self.canaries,
            "confidence": self.confidence,
            "delta": self.delta,
            "two_sided": self.two_sided,
            "k_grid": list(self.grid),
            "significance_per_k": (1 - self.confidence) / len(self.grid),
            "theorem": "Steinke, Nasr & Jagielski 2023, Thm 5.2 (exact p-value, with δ); "
            "union bound over the k grid",
        }


def epsilon_one_run(
    scores: Any,
    member: Any,
    *,
    confidence: float = 0.95,
    delta: float,
    k: int | Sequence[int] | None = None,
    two_sided: bool = False,
) -> OneRunResult:
    """One-run ε lower bound from the canaries of one training run (module docstring).

    ``k``: the number of guesses (an int: no correction), a grid to choose from (union bound
    over the grid), or None for :data:`DEFAULT_K_GRID` ∩ [1, m] plus m itself.
    """
    _check_level(confidence, delta)
    s, b = _split_scores(scores, member)
    m = s.size
    if k is None:
        grid = tuple(sorted({*(g for g in DEFAULT_K_GRID if g < m), m}))
    elif isinstance(k, (int, np.integer)):
        grid = (int(k),)
    else:
        grid = tuple(sorted({int(g) for g in k}))
    if not grid or grid[0] < 1 or grid[-1] > m:
        raise PrivtoolError(
            f"guesses k={list(grid)} are not allowed: integers in [1, {m}] (the number of canaries)"
        )
    sig = (1 - confidence) / len(grid)
    best = (0.0, grid[0], _guess(s, b, grid[0], two_sided)[1])
    for kk in grid:
        r, v = _guess(s, b, kk, two_sided)
        eps = one_run_epsilon(m, r, v, significance=sig, delta=delta)
        if eps > best[0]:
            best = (eps, r, v)
    return OneRunResult(
        epsilon_lb=best[0],
        guesses=best[1],
        correct=best[2],
        canaries=m,
        confidence=float(confidence),
        delta=float(delta),
        two_sided=two_sided,
        grid=grid,
    )


def gdp_to_epsilon(mu: float, delta: float) -> float:
    """The ε of μ-GDP at δ (Dong, Roth & Su 2019, Cor. 2.13: δ(ε) = Φ(−ε/μ + μ/2) −
    e^ε Φ(−ε/μ − μ/2)), by root finding in log space; 0 when δ(0) ≤ δ."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    mu = abs(float(mu))
    if mu == 0 or not math.isfinite(mu):
        return 0.0 if mu == 0 else math.inf

    def log_gap(eps: float) -> float:
        a = norm.logcdf(-eps / mu + mu / 2)
        b = eps + norm.logcdf(-eps / mu - mu / 2)
        if b >= a:  # δ(ε) ≤ 0
            return -1e3
        return a + math.log1p(-math.exp(b - a)) - math.log(delta)

    if log_gap(0.0) <= 0:
        return 0.0
    hi = 1.0
    while log_gap(hi) > 0:
        hi *= 2
    return float(brentq(log_gap, hi / 2 if hi > 1 else 0.0, hi, xtol=1e-9))


def _log_ratio(pos: np.ndarray, neg: np.ndarray, delta: float) -> float:
    """max over thresholds of log((pos − δ)/neg), 0 where pos ≤ δ, never below 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.where(pos > delta, np.log(np.maximum(pos - delta, 1e-300)) - np.log(neg), 0.0)
    return float(max(np.nan_to_num(e, nan=0.0, posinf=np.inf).max(), 0.0))


def _single_canary_bounds(
    s_in: np.ndarray, s_out: np.ndarray, *, significance: float, delta: float, one_sided: bool
) -> tuple[float, float]:
    """(Clopper–Pearson ε_lb, GDP ε_lb) of one canary's many-run scores at ``significance``."""
    from scipy.stats import norm

    from privtool.attacks.audit import clopper_pearson, roc_curve, roc_hull

    roc = roc_curve(np.r_[s_in, s_out], np.r_[np.ones(s_in.size, bool), np.zeros(s_out.size, bool)])
    idx = roc_hull(roc)
    fp, tp = roc.fp[idx], roc.tp[idx]
    fn = roc.n_in - tp
    # Clopper–Pearson (Jagielski et al. 2020): two rates, Bonferroni over the hull
    _, fpr_hi = clopper_pearson(fp, roc.n_out, significance / 2 / len(idx))
    _, fnr_hi = clopper_pearson(fn, roc.n_in, significance / 2 / len(idx))
    cp = _log_ratio(1 - fnr_hi, fpr_hi, delta)  # TPR ≤ e^ε·FPR + δ
    if not one_sided:  # and TNR ≤ e^ε·FNR + δ
        cp = max(cp, _log_ratio(1 - fpr_hi, fnr_hi, delta))
    # GDP fit (Nasr et al. 2023): the largest |μ| the bounds allow, Bonferroni over 2·|hull|
    _, fpr_u = clopper_pearson(fp, roc.n_out, significance / (2 * len(idx)))
    _, fnr_u = clopper_pearson(fn, roc.n_in, significance / (2 * len(idx)))
    ok = np.maximum(fpr_u, fnr_u) < 1 - delta
    mus = norm.isf(fpr_u[ok]) - norm.ppf(fnr_u[ok])
    if not one_sided:
        mus = np.abs(mus)
    mu = float(np.max(mus, initial=0.0))
    gdp = gdp_to_epsilon(mu, delta) if mu > 0 else 0.0
    return cp, gdp


def epsilon_many_runs(
    scores: Any, member: Any, *, confidence: float = 0.95, delta: float, one_sided: bool = True
) -> dict[str, Any]:
    """Many-run ε lower bounds from ``scores``/``member`` of shape (R runs, M canaries):
    Clopper–Pearson and the GDP fit, per canary, the best canary reported with a union bound
    over the M canaries (module docstring)."""
    _check_level(confidence, delta)
    s = np.asarray(scores, dtype=np.float64)
    b = np.asarray(member).astype(bool)
    if s.ndim != 2 or s.shape != b.shape:
        raise PrivtoolError(
            f"many-run scores must be (runs, canaries); got {s.shape} and {b.shape}"
        )
    if not np.isfinite(s).all():
        raise PrivtoolError("canary scores contain NaN or infinite values")
    runs, m = s.shape
    sig = (1 - confidence) / m
    cp_best, gdp_best, cp_at, gdp_at, usable = 0.0, 0.0, None, None, 0
    for j in range(m):
        inc = b[:, j]
        if inc.all() or not inc.any():
            continue  # this canary was in (or out of) every run: no trial of it
        usable += 1
        cp, gdp = _single_canary_bounds(
            s[inc, j], s[~inc, j], significance=sig, delta=delta, one_sided=one_sided
        )
        if cp > cp_best:
            cp_best, cp_at = cp, j
        if gdp > gdp_best:
            gdp_best, gdp_at = gdp, j
    return {
        "epsilon_lb_clopper_pearson": cp_best,
        "epsilon_lb_gdp": gdp_best,
        "canary_clopper_pearson": cp_at,
        "canary_gdp": gdp_at,
        "runs": runs,
        "canaries": m,
        "canaries_usable": usable,
        "confidence": float(confidence),
        "delta": float(delta),
        "two_sided": not one_sided,
        "significance_per_canary": sig,
        "theorem": "Clopper–Pearson on FPR/FNR (Jagielski et al. 2020) and μ-GDP fit "
        "(Nasr et al. 2023; Dong et al. 2019 Cor. 2.13), per canary over "
        "independent runs, union bound over canaries",
    }
