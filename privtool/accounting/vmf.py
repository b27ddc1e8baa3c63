r"""Sound privacy accounting for DirDP-SGD (paper 1, §3.2, Alg. 2): VMF noise on unit gradients.

Derivation
----------
**One part.** The von Mises–Fisher mechanism VMF(κ, x), density ∝ exp(κ xᵀy) on the unit sphere
S^{d-1}, is κ·d₂-private: P[V(x) ∈ Y] ≤ exp(κ‖x − x'‖₂) · P[V(x') ∈ Y] (Weggenmann & Kerschbaum
2021; paper 1, Thm 1). Since d₂ ≤ d_θ on the sphere it is also κ·d_θ-private (paper 1, Cor. 3):
the per-step *metric* guarantee is κ·d_θ per part (``epsilon_metric_step`` = κ).

**One step, replace-one.** Each per-sample gradient is cut into m parts and *each part* is scaled
to unit norm (paper 1, Alg. 2 line 10, applied per part; a zero part gets a fixed unit vector).
Replacing one record changes its unit vector in every part by d₂ ≤ 2 and leaves the other b − 1
records' VMF draws identically distributed, so the joint density ratio is at most
exp(Σ_parts κ·2) = exp(2κm): one step on a batch is ε_step = 2κm pure DP (basic composition over
the m independent parts). Averaging the draws is post-processing. Paper 1's Cor. 1 figure 2κ√m
needs weights λ_i with Σ|λ_i| ≤ √m, i.e. the m parts of ONE unit vector (v = Σ λ_i u_i); privtool
scales every part to unit norm, so λ_i = 1, Σ|λ_i| = m, and the √m does not apply.

**Nominal ε_V.** Paper 1 reports ε_V = 2κ√m per update (Cor. 1/2 with σ = κ = ε/2 for m = 1);
it is recorded as ``epsilon_v_nominal``, and κ for a given ε_V is ε_V / (2√m). It is *not* a
guarantee for the run: it counts the parts as √m rather than m, and leaves out the sampling and
the T steps.

**Sampling.** The VMF sum is not DP under add/remove neighbours: one extra unit vector in a sum
of b unit vectors changes its support (norm ≤ b vs ≤ b + 1), an unbounded density ratio. So
batches have a fixed size b, drawn uniformly without replacement from the n records, and the
relation is replace-one. Subsampling then amplifies ε_step to

    ε' = log(1 + (b/n)(e^{ε_step} − 1))

(Balle, Barthe & Gaboardi 2018, Thm 9: sampling without replacement, substitution relation).
Poisson sampling gives no such amplification here (its batch size varies: add/remove, see above).

**T steps.** The steps compose adaptively, each ε'-DP. The optimal (tight) composition of T
pure ε0-DP mechanisms is attained by T-fold randomized response (Kairouz, Oh & Viswanath 2015,
Thm 3.3; Murtagh & Vadhan 2016): with p = e^{ε0}/(1 + e^{ε0}), P = Binom(T, p) and Q = Binom(T,
1 − p) over the number j of "truthful" answers, the privacy loss is L_j = log(P_j/Q_j) =
ε0·j − ε0·(T − j) = ε0(2j − T), and the exact hockey-stick divergence is

    δ(ε) = Σ_j (P_j − e^ε Q_j)_+ = Σ_{j: L_j > ε} P_j (1 − e^{ε − L_j}),
    log P_j = log C(T, j) + j log p + (T − j) log(1 − p),

which at ε = (T − 2i)ε0 is Kairouz et al.'s closed form Σ_{l<i} C(T,l)(e^{ε0(T−l)} −
e^{ε0(T−2i+l)}) / (1 + e^{ε0})^T. It is computed in log space (gammaln, logsumexp, log(1 − e^x))
so it is stable for T up to 10⁶ and ε0 from 10⁻⁶ to 10⁴. The run's ε for a given δ is the
smallest ε ≥ 0 with δ(ε) ≤ δ: δ is decreasing, and between consecutive L_j it equals
A − e^ε B (A = Σ P_j, B = Σ P_j e^{−L_j} over the j with L_j > ε), so a binary search over the
breakpoints L_j and one closed-form solve give it exactly (then checked, and nudged up if
rounding left δ(ε) above δ). Basic composition T·ε0 is never smaller, and min(·, T·ε0) is
returned anyway.

Whole run: (ε, δ)-DP with ε = compose(ε', T, δ), ε' = amplify(2κm, b/n), replace-one relation.
This is ``epsilon_pure_bound``.

**Tight ε (the headline).** Given the parts' dimensions, :mod:`privtool.accounting.vmf_pld`
computes the privacy-loss distribution of the same run (same relation, sampling and steps) and
its ε for δ; the run's ``epsilon`` is min(PLD ε, pure bound), both sound, and ``accounting``
says which accountant ran ("pld" with dimensions, "pure" without).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammaln, logsumexp

from privtool.accounting.gaussian import _check_run, _count, _real
from privtool.errors import PrivtoolError


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 − e^x) for x < 0, accurate near 0 and for very negative x (Mächler 2012)."""
    x = np.asarray(x, dtype=float)
    return np.where(
        x > -math.log(2),
        np.log(-np.expm1(np.minimum(x, -1e-300))),
        np.log1p(-np.exp(np.minimum(x, -math.log(2)))),
    )


@functools.lru_cache(maxsize=4)
def _log_binom_coeffs(steps: int) -> np.ndarray:
    j = np.arange(steps + 1, dtype=float)
    out = gammaln(steps + 1.0) - gammaln(j + 1.0) - gammaln(steps - j + 1.0)
    out.setflags(write=False)
    return out


class _RandomizedResponseComposition:
    """T-fold randomized response with parameter ε0: log P_j and losses L_j (ascending in j)."""

    def __init__(self, epsilon: float, steps: int):
        j = np.arange(steps + 1, dtype=float)
        log_p = -np.logaddexp(0.0, -epsilon)  # log(e^ε0 / (1 + e^ε0))
        log_1mp = -np.logaddexp(0.0, epsilon)  # log(1 / (1 + e^ε0))
        self.log_pmf = _log_binom_coeffs(steps) + j * log_p + (steps - j) * log_1mp
        self.loss = epsilon * (2.0 * j - steps)

    def first_above(self, eps: float) -> int:
        """Smallest j with L_j > eps."""
        return int(np.searchsorted(self.loss, eps, side="right"))

    def log_delta(self, eps: float) -> float:
        """log δ(ε) = log Σ_{L_j > ε} P_j (1 − e^{ε − L_j})."""
        k = self.first_above(eps)
        if k >= len(self.loss):
            return -math.inf
        return float(logsumexp(self.log_pmf[k:] + _log1mexp(eps - self.loss[k:])))


def _compose_delta(*, epsilon: float, steps: int, total_epsilon: float) -> float:
    return math.exp(_RandomizedResponseComposition(epsilon, steps).log_delta(total_epsilon))


def compose_pure_dp_delta(*, epsilon: float, steps: int, total_epsilon: float) -> float:
    """Exact δ(total_epsilon) of the optimal composition of ``steps`` ε-DP mechanisms
    (Kairouz, Oh & Viswanath 2015, Thm 3.3): the hockey-stick divergence of T-fold RR."""
    e0 = _real("epsilon", epsilon, low=0.0, high=math.inf, high_open=True)
    n = _count("steps", steps, low=0)
    total = _real("total_epsilon", total_epsilon, low=0.0)
    if n == 0 or e0 == 0:
        return 0.0
    return _compose_delta(epsilon=e0, steps=n, total_epsilon=total)


def compose_pure_dp(*, epsilon: float, steps: int, delta: float) -> float:
    """Smallest ε with T-fold (adaptive) composition of ε0-DP mechanisms (ε, δ)-DP: exact
    optimal composition (Kairouz, Oh & Viswanath 2015; Murtagh & Vadhan 2016), ≤ T·ε0."""
    e0 = _real("epsilon", epsilon, low=0.0, high=math.inf, high_open=True)
    n = _count("steps", steps, low=0)
    d = _real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    if n == 0 or e0 == 0:
        return 0.0
    rr = _RandomizedResponseComposition(e0, n)
    log_target = math.log(d)
    if rr.log_delta(0.0) <= log_target:
        return 0.0
    # Smallest breakpoint index j (with L_j > 0) such that δ(L_j) ≤ δ; δ(L_T) = 0 always.
    lo_j, hi_j = rr.first_above(0.0), n
    while lo_j < hi_j:
        mid = (lo_j + hi_j) // 2
        if rr.log_delta(float(rr.loss[mid])) <= log_target:
            hi_j = mid
        else:
            lo_j = mid + 1
    j = hi_j
    left = max(0.0, float(rr.loss[j - 1])) if j >= 1 else 0.0
    right = float(rr.loss[j])
    # On (left, right) the j' with L_j' > ε are exactly j' ≥ j: δ(ε) = A − e^ε B.
    log_a = float(logsumexp(rr.log_pmf[j:]))
    log_b = float(logsumexp(rr.log_pmf[j:] - rr.loss[j:]))
    if log_target < log_a:
        eps = log_a + float(_log1mexp(log_target - log_a)) - log_b
    else:
        eps = left
    eps = min(max(eps, left), right)
    # Rounding may leave δ(ε) a hair above δ: step up until it is not (never under-report ε).
    step = max(abs(eps), 1e-300) * 1e-15
    for _ in range(200):
        if math.exp(rr.log_delta(eps)) <= d:  # the same test compose_pure_dp_delta would make
            break
        eps = min(eps + step, right)
        step *= 2
    else:  # pragma: no cover - the right end always satisfies δ(L_j) ≤ δ
        eps = right
    return min(eps, n * e0)


def amplify_without_replacement(*, epsilon: float, sample_rate: float) -> float:
    """ε' = log(1 + q(e^ε − 1)) for a batch of b = q·n drawn without replacement, replace-one
    relation (Balle, Barthe & Gaboardi 2018, Thm 9). Stable for tiny and huge ε."""
    e = _real("epsilon", epsilon, low=0.0)
    q = _real("sample_rate", sample_rate, low=0.0, high=1.0, low_open=True)
    if q == 1.0 or math.isinf(e):
        return e
    if e < 700:
        return math.log1p(q * math.expm1(e))
    # log(q e^ε + 1 − q) = ε + log q + log1p((1 − q)/q · e^{−ε})
    return e + math.log(q) + math.log1p((1 - q) / q * math.exp(-e))


def _deamplify(epsilon: float, sample_rate: float) -> float:
    """Inverse of :func:`amplify_without_replacement`: ε with log(1 + q(e^ε − 1)) = ``epsilon``."""
    if sample_rate == 1.0:
        return epsilon
    if epsilon < 700:
        return math.log1p(math.expm1(epsilon) / sample_rate)
    return epsilon - math.log(sample_rate) + math.log1p(-(1 - sample_rate) * math.exp(-epsilon))


def vmf_step_epsilon(*, kappa: float, parts: int) -> float:
    """Pure ε of one DirDP-SGD step under replace-one: 2κ per unit-norm part, 2κm for m parts."""
    k = _real("kappa", kappa, low=0.0, high=math.inf, high_open=True)
    m = _count("parts", parts, low=1)
    return 2.0 * k * m


def vmf_nominal_epsilon(*, kappa: float, parts: int) -> float:
    """Paper 1's nominal per-update ε_V = 2κ√m (Cor. 1/2); not a guarantee for the run."""
    k = _real("kappa", kappa, low=0.0, high=math.inf, high_open=True)
    m = _count("parts", parts, low=1)
    return 2.0 * k * math.sqrt(m)


def kappa_from_nominal(*, epsilon_v: float, parts: int) -> float:
    """κ = ε_V / (2√m): the κ paper 1 would use for a nominal per-update ε_V."""
    e = _real("epsilon_v", epsilon_v, low=0.0, high=math.inf, low_open=True, high_open=True)
    m = _count("parts", parts, low=1)
    return e / (2.0 * math.sqrt(m))


def _check_part_dims(part_dims: Sequence[int] | None, parts: int) -> tuple[int, ...] | None:
    if part_dims is None:
        return None
    dims = tuple(int(d) for d in part_dims)
    if not dims or any(d < 1 for d in dims):
        raise PrivtoolError(
            f"part_dims={list(part_dims)!r} is not allowed: a non-empty list of "
            "integers >= 1 (one dimension per VMF part)"
        )
    if len(dims) != parts:
        raise PrivtoolError(
            f"parts={parts} does not match part_dims ({len(dims)} parts); give "
            "one dimension per part"
        )
    return dims


def vmf_epsilon(
    *,
    kappa: float,
    parts: int,
    sample_rate: float,
    steps: int,
    delta: float,
    part_dims: Sequence[int] | None = None,
    pld_grid: float | None = None,
) -> dict[str, Any]:
    """Every ε of a DirDP-SGD run: the whole-run (ε, δ) (replace-one, fixed-size batches without
    replacement), per-step pure ε, amplified ε, nominal ε_V, metric κ. ``epsilon`` is the tight
    PLD figure (min with the pure bound) when ``part_dims`` gives each part's dimension, else the
    pure bound; ``epsilon_pure_bound`` is always the pure bound. ``pld_grid``: the PLD grid step
    (default: chosen for 1 % precision)."""
    k = _real("kappa", kappa, low=0.0, high=math.inf, high_open=True)
    m = _count("parts", parts, low=1)
    q, n, d = _check_run(sample_rate=sample_rate, steps=steps, delta=delta)
    dims = _check_part_dims(part_dims, m)
    eps_step = vmf_step_epsilon(kappa=k, parts=m)
    eps_amp = amplify_without_replacement(epsilon=eps_step, sample_rate=q)
    pure = compose_pure_dp(epsilon=eps_amp, steps=n, delta=d)
    out: dict[str, Any] = {"epsilon": pure, "epsilon_pure_bound": pure, "accounting": "pure"}
    if dims is not None:
        from privtool.accounting.vmf_pld import GridTooLarge, pld_epsilon

        try:
            tight = pld_epsilon(
                kappa=k, part_dims=dims, sample_rate=q, steps=n, delta=d, h=pld_grid
            )
        except GridTooLarge as e:  # κ·m so large that the loss grid does not fit: pure bound
            out["note"] = f"pure bound only: {e}"
        else:
            out.update(epsilon=min(tight["epsilon_pld"], pure), accounting="pld", **tight)
    return {
        **out,
        "delta": d,
        "epsilon_step": eps_step,
        "epsilon_step_amplified": eps_amp,
        "epsilon_v_nominal": vmf_nominal_epsilon(kappa=k, parts=m),
        "epsilon_metric_step": k,
        "kappa": k,
        "parts": m,
        "sample_rate": q,
        "steps": n,
    }


def _kappa_pure(target: float, m: int, q: float, n: int, d: float) -> float:
    """Largest κ whose pure bound is ≤ ``target``."""

    def excess(eps0: float) -> float:
        return compose_pure_dp(epsilon=eps0, steps=n, delta=d) - target

    # Largest amplified per-step ε0 whose composition is ≤ target (compose is increasing in ε0).
    high = target
    while excess(high) <= 0:
        high *= 2
    eps0 = brentq(excess, 0.0, high, xtol=1e-300, rtol=1e-13, maxiter=500)
    while excess(eps0) > 0:
        eps0 *= 1 - 1e-12
    kappa = _deamplify(eps0, q) / (2.0 * m)

    def whole_run(kap: float) -> float:
        return vmf_epsilon(kappa=kap, parts=m, sample_rate=q, steps=n, delta=d)[
            "epsilon_pure_bound"
        ]

    shrink = 1e-13
    while kappa > 0 and whole_run(kappa) > target:  # rounding in the inverse: step down
        kappa *= 1 - shrink
        shrink *= 2
    return kappa


def _kappa_tight(
    target: float, dims: tuple[int, ...], q: float, n: int, d: float, kappa_pure: float
) -> tuple[float, float]:
    """Largest κ (to 0.1 %) whose PLD ε on one fixed grid is ≤ ``target`` (each PLD ε is a sound
    upper bound whatever the grid, so the κ returned is sound): Illinois regula falsi on log κ.
    The grid is refined at the solution and the solve repeated if the grid changed (the first
    grid comes from a rough κ). Returns (κ, grid)."""
    from privtool.accounting.vmf_pld import dims_counter, epsilon_guess, refine_grid

    counts = dims_counter(dims)
    guess_at_1 = epsilon_guess(1.0, counts, q, n, d)  # μ-GDP limit: ε ∝ κ there
    kappa = max(
        kappa_pure, min(target / guess_at_1, 1e3 * kappa_pure) if guess_at_1 > 0 else kappa_pure
    )
    from privtool.accounting.vmf_pld import GridTooLarge

    h = refine_grid(kappa, counts, q, n, d)
    solved = None
    for _ in range(6):
        try:
            kappa = _solve_on_grid(target, counts, q, n, d, h, kappa_pure, kappa)
        except _TooFine as e:  # the search reached κ where this grid is too fine: coarsen
            kappa, solved = e.kappa, None
            h_new = refine_grid(kappa, counts, q, n, d)
            if h_new <= h:
                raise GridTooLarge(f"no grid fits kappa={kappa:g}") from None
            h = h_new
            continue
        solved = (kappa, h)
        h_new = refine_grid(kappa, counts, q, n, d)
        if h_new >= h:
            break
        h = h_new
    if solved is None:
        raise GridTooLarge("the kappa search did not settle on a grid")
    return solved


class _TooFine(Exception):
    def __init__(self, kappa: float) -> None:
        super().__init__(kappa)
        self.kappa = kappa


def _solve_on_grid(
    target: float,
    counts: tuple[tuple[int, int], ...],
    q: float,
    n: int,
    d: float,
    h: float,
    kappa_pure: float,
    start: float,
) -> float:
    from privtool.accounting.vmf_pld import GridTooLarge, _run_epsilon

    def f(log_k: float) -> float:
        try:
            return _run_epsilon(math.exp(log_k), counts, q, n, d, h) - target
        except GridTooLarge:
            raise _TooFine(math.exp(log_k)) from None

    # Bracket [lo, hi] with f(lo) ≤ 0 < f(hi), from ``start`` outwards (never below κ_pure).
    floor = math.log(max(kappa_pure, 1e-300))
    x = max(math.log(start), floor)
    fx = f(x)
    step = math.log(1.5)
    if fx <= 0:
        lo, f_lo = x, fx
        hi, f_hi = x + step, f(x + step)
        while f_hi <= 0:
            lo, f_lo = hi, f_hi
            step = math.log(2.0)
            hi, f_hi = hi + step, f(hi + step)
    else:
        hi, f_hi = x, fx
        lo = max(x - step, floor)
        f_lo = f(lo)
        while f_lo > 0 and lo > floor:
            hi, f_hi = lo, f_lo
            step *= 2
            lo = max(lo - step, floor)
            f_lo = f(lo)
        if f_lo > 0:  # above the target even at the pure-bound κ: that κ is the answer
            return kappa_pure
    side = 0
    for _ in range(60):
        if hi - lo < 1e-3:
            break
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        x = min(max(x, lo + 0.05 * (hi - lo)), hi - 0.05 * (hi - lo))
        fx = f(x)
        if fx <= 0:
            lo, f_lo = x, fx
            if side == -1:
                f_hi /= 2
            side = -1
        else:
            hi, f_hi = x, fx
            if side == 1:
                f_lo /= 2
            side = 1
    return math.exp(lo)


def vmf_kappa_for_epsilon(
    *,
    target_epsilon: float,
    parts: int,
    sample_rate: float,
    steps: int,
    delta: float,
    part_dims: Sequence[int] | None = None,
) -> float:
    """Largest κ whose whole-run ε (:func:`vmf_epsilon`'s headline) is ≤ ``target_epsilon``:
    against the tight PLD ε when ``part_dims`` is given (≤ target on the grid
    :func:`vmf_solve_kappa` returns, within about 0.1 % in κ), else against the pure bound
    (exact); never above the target."""
    return vmf_solve_kappa(
        target_epsilon=target_epsilon,
        parts=parts,
        sample_rate=sample_rate,
        steps=steps,
        delta=delta,
        part_dims=part_dims,
    )[0]


def vmf_solve_kappa(
    *,
    target_epsilon: float,
    parts: int,
    sample_rate: float,
    steps: int,
    delta: float,
    part_dims: Sequence[int] | None = None,
) -> tuple[float, float | None]:
    """(κ, PLD grid) of :func:`vmf_kappa_for_epsilon`; pass the grid back to :func:`vmf_epsilon`
    (``pld_grid``) to get the very ε the solve held below the target (None: pure bound)."""
    target = _real(
        "target_epsilon", target_epsilon, low=0.0, high=math.inf, low_open=True, high_open=True
    )
    m = _count("parts", parts, low=1)
    q, n, d = _check_run(sample_rate=sample_rate, steps=steps, delta=delta)
    if n == 0:
        raise PrivtoolError(
            "steps=0 is not allowed here: an integer >= 1 (with no step every "
            "kappa gives epsilon=0, so there is no largest kappa)"
        )
    dims = _check_part_dims(part_dims, m)
    kappa_pure = _kappa_pure(target, m, q, n, d)
    if dims is None:
        return kappa_pure, None
    from privtool.accounting.vmf_pld import GridTooLarge

    try:
        kappa, grid = _kappa_tight(target, dims, q, n, d, kappa_pure)
    except GridTooLarge:  # the tight ε needs too fine a grid at these κ: the pure-bound κ
        return kappa_pure, None
    return max(kappa_pure, kappa), grid
