r"""Tight (ε, δ) accounting for DirDP-SGD: a privacy-loss-distribution (PLD) accountant for VMF noise.

The pure bound in :mod:`privtool.accounting.vmf` charges every part 2κ, the loss of the single
worst output. This accountant computes the whole distribution of the privacy loss instead:
:mod:`privtool.accounting.vmf_step_pld` builds one unsampled step's PLD (each part's loss PMF on a
grid, the parts convolved); this module adds fixed-size sampling, composes the steps with
dp_accounting's PLD machinery (Meiser & Mohammadi 2018; Koskela et al. 2020; Doroshenko et al.
2022), chooses the grid and reads off ε for δ. Every approximation is made on the pessimistic
side; the same grid rounded the other way gives an optimistic figure, and the true ε of the
bound lies between them.

Derivation
----------
**One step** (one part under replace-one, the antipodal pair's dominance, the parts convolved,
the pessimistic and optimistic rounding onto hℤ): :mod:`privtool.accounting.vmf_step_pld`.

**Grid.** Rounding adds up to h per part and step, on average h/2, so over K = m·T
compositions the pessimistic ε exceeds the true one by about K·h/2 (q = 1). The grid starts
from K and a μ-GDP guess of ε and is refined by halving until ε(h) − ε(h/2), the error of
ε(h/2) if it is linear in h as rounding makes it, is ≤ ``precision`` (default 1 %) of ε.

**Sampling (fixed-size batches without replacement, replace-one).** Let δ_s be one (unsampled)
step's privacy profile (from its pessimistic PLD) and q = b/n. Balle, Barthe & Gaboardi 2018,
Theorem 9: if a mechanism on batches of size b is (ε, δ)-DP under substitution, then its
composition with sampling b of n records without replacement is (ε', δ')-DP under substitution,
with ε' = log(1 + q(e^ε − 1)) and δ' = q δ. Applied at every ε ≥ 0 with δ = δ_s(ε) it bounds the
sampled step's profile: for ε' ≥ 0,

    δ'(ε') ≤ g(ε') := q · δ_s(log(1 + (e^{ε'} − 1)/q)).

For ε' < 0 the identity H_α(P‖Q) = 1 − α + α H_{1/α}(Q‖P) (α = e^{ε'} < 1) and the same theorem
for the reversed pair (replace-one is symmetric and the step pair is symmetric) give
g(ε') := 1 − e^{ε'} + e^{ε'} q δ_s(log(1 + (e^{−ε'} − 1)/q)). The function g is convex in α = e^{ε'}
(an affine map, and a perspective, of the convex δ_s), decreasing, with g → 1 as α → 0: a valid
privacy profile. It is turned into a dominating PLD by Doroshenko, Ghazi, Kamath, Kumar &
Manurangsi 2022 (Connect the Dots, Algorithm 1, pessimistic;
``pld_pmf.create_pmf_pessimistic_connect_dots_fixed_gap``): the discrete pair it builds has
hockey-stick curve equal to g at the grid points ε' ∈ hℤ ∩ [−ε_top, ε_top] and linear in e^{ε'}
between them, hence ≥ the convex true curve everywhere (and ε_top is the largest finite sampled
loss, beyond which g is put on the infinite loss). A pair whose hockey-stick curve is everywhere
≥ that of every neighbouring pair is a dominating pair (Zhu, Dong & Wang 2022, Definition 7), and
adaptive composition of dominated mechanisms is dominated by the composition of the dominating
pairs (ibid., Theorem 10). So the T-fold self-composition of the connect-the-dots PLD gives a
sound (ε, δ) for the run. At q = 1 the step PLD is composed directly. Optimistic companion for
q < 1: the loss distribution of the pair whose profile is g, rounded down on the same grid
(:func:`sampled_step_pld`), built from the rounded-down step; it brackets the accountant from
below but converges more slowly in h than the pessimistic side (a wider gap at q < 1).

**Steps.** ``self_compose(T)`` (dp_accounting, FFT with pessimistic tail truncation), then
ε for δ (``get_epsilon_for_delta``) and δ for ε (``get_delta_for_epsilon``).

Whole run: (ε, δ)-DP under replace-one, fixed-size batches drawn without replacement, T steps.
The headline figure is min(this ε, the pure bound of :mod:`privtool.accounting.vmf`), both sound.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from privtool.accounting.vmf_step_pld import (
    LOSS_FLOOR,
    MAX_PART_POINTS,
    TAIL_MASS,
    GridTooLarge,
    dims_counter,
    step_pld,
)
from privtool.errors import PrivtoolError

#: Target relative precision of the pessimistic ε (the gap to the true ε of the bound).
DEFAULT_PRECISION = 0.01
#: Largest number of grid points a composed PLD may span; beyond it the grid is coarsened.
MAX_RUN_POINTS = 40_000_000
#: Coarsest grid step (dp_accounting's connect-the-dots computes e^h − 1; ε is reported to
#: about h anyway, and where that is too fine for the loss range the pure bound is used).
MAX_GRID = 64.0

# -- sampling, the run ------------------------------------------------------------------------------


def _dense_losses(pld) -> tuple[np.ndarray, np.ndarray, float]:
    """(losses ascending, probabilities, infinity mass) of a symmetric dp_accounting PLD.
    dp_accounting has no public getter for them; its own δ(ε) loops in Python, too slow for the
    thousands of ε a connect-the-dots grid needs."""
    pmf = pld._pmf_remove.to_dense_pmf()
    losses = (np.arange(pmf.size) + pmf._lower_loss) * pmf._discretization
    return losses, np.asarray(pmf._probs, dtype=float), float(pmf._infinity_mass)


def hockey_stick(
    losses: np.ndarray, probs: np.ndarray, infinity_mass: float, epsilons: np.ndarray
) -> np.ndarray:
    """δ(ε) = p_∞ + Σ_{L > ε} p (1 − e^{ε − L}) for many ε at once: dp_accounting's formula
    (``pld_pmf._get_delta_for_epsilon_vectorized``), with the sums accumulated from the top as
    there, vectorised. FFT round-off can leave tiny negative masses: they are set to 0 (adding
    mass only raises δ, the pessimistic side)."""
    probs = np.maximum(probs, 0.0)
    up = np.cumsum(probs[::-1])[::-1]  # Σ_{j ≥ i} p_j
    with np.errstate(divide="ignore"):  # log Σ_{j ≥ i} p_j e^{−L_j}
        log_low = np.logaddexp.accumulate((np.log(probs) - losses)[::-1])[::-1]
    idx = np.searchsorted(losses, epsilons, side="right")  # first L_j > ε
    up = np.append(up, 0.0)[idx]
    log_low = np.append(log_low, -np.inf)[idx]
    scaled = np.exp(np.asarray(epsilons, dtype=float) + log_low)
    return np.maximum(infinity_mass + up - scaled, 0.0)


def sampled_profile(step, sample_rate: float, h: float) -> tuple[int, int, np.ndarray]:
    """Balle et al. 2018 Thm 9 bound g(ε') on the grid ε' = i·h, i = −n_bottom … n_top (module
    docstring), from the unsampled step's PLD; n_top·h covers the largest finite sampled loss."""
    q = sample_rate
    losses, probs, inf_mass = _dense_losses(step)
    top = float(losses[-1]) if len(losses) else 0.0
    top_sampled = math.log1p(q * math.expm1(top)) if top < 700 else top + math.log(q)
    n_top = max(1, math.ceil(top_sampled / h))
    if 2 * n_top > MAX_RUN_POINTS:
        raise GridTooLarge(
            f"the sampled step's loss reaches {top_sampled:.4g}: {2 * n_top} grid points at h={h:g}"
        )
    grid = np.arange(0, n_top + 1, dtype=float) * h  # ε' ≥ 0
    # ε with e^ε' = 1 + q(e^ε − 1), i.e. ε' + log((1 − e^{−ε'})/q + e^{−ε'}), stable for any ε'.
    inner_eps = grid + np.log(-np.expm1(-grid) / q + np.exp(-grid))
    delta_s = np.clip(hockey_stick(losses, probs, inf_mass, inner_eps), 0.0, 1.0)
    pos = np.minimum(q * delta_s, 1.0)  # g(ε'), ε' ≥ 0
    neg = -np.expm1(-grid) + np.exp(-grid) * pos  # g(−ε'), ε' ≥ 0
    # Negative losses stop at −LOSS_FLOOR (beyond it e^{−ℓ} overflows); connect-the-dots puts
    # the mass below its lowest point on that point, which only raises δ.
    n_bottom = min(n_top, int(LOSS_FLOOR / h))
    deltas = np.concatenate([neg[1 : n_bottom + 1][::-1], pos])
    return n_bottom, n_top, np.clip(np.minimum.accumulate(deltas), 0.0, 1.0)


def sampled_step_pld(step, sample_rate: float, h: float, pessimistic: bool = True):
    """One step with fixed-size sampling without replacement (replace-one): a PLD built from the
    profile bound g of :func:`sampled_profile`. Pessimistic: Doroshenko et al. 2022's
    connect-the-dots (hockey-stick ≥ g everywhere). Optimistic: with G(ε) = P[L > ε] of the pair
    whose profile is g, ∫_{ε_i}^{ε_{i+1}} e^{−l} G(l) dl = e^{−ε_i} g_i − e^{−ε_{i+1}} g_{i+1}
    (since d/dε (e^{−ε} δ(ε)) = −e^{−ε} G(ε)) and G is non-increasing, so
    Ĝ_i = (g_i − e^{−h} g_{i+1}) / (1 − e^{−h}) lies in [G(ε_{i+1}), G(ε_i)]; the loss with
    P[L ≥ ε_i] = Ĝ_i is stochastically below the true one (a rounding down)."""
    from dp_accounting.pld import pld_pmf
    from dp_accounting.pld import privacy_loss_distribution as pldlib

    n_bottom, n_top, deltas = sampled_profile(step, sample_rate, h)
    if pessimistic:
        pmf = pld_pmf.create_pmf_pessimistic_connect_dots_fixed_gap(h, -n_bottom, n_top, deltas)
        return pldlib.PrivacyLossDistribution(pmf)
    g_hat = (deltas[:-1] - math.exp(-h) * deltas[1:]) / -math.expm1(-h)
    g_hat = np.minimum.accumulate(np.clip(g_hat, 0.0, 1.0))  # P[L ≥ ε_i], i = −n … n−1
    probs = g_hat - np.append(g_hat[1:], 0.0)
    probs[0] = 0.0  # everything below the grid: dropped (loss −∞), the optimistic side
    return pldlib.PrivacyLossDistribution(pld_pmf.DensePLDPmf(h, -n_bottom, probs, 0.0, False))


def run_pld(
    kappa: float,
    dims: tuple[tuple[int, int], ...],
    sample_rate: float,
    steps: int,
    h: float,
    pessimistic: bool = True,
):
    """PLD of the whole run: step (parts convolved), sampled (connect-the-dots), T-fold."""
    step = step_pld(kappa, dims, h, pessimistic)
    if sample_rate < 1.0:
        step = sampled_step_pld(step, sample_rate, h, pessimistic)
    if steps == 1:
        return step
    return step.self_compose(steps, tail_mass_truncation=TAIL_MASS)


# -- grid choice and the public figures -------------------------------------------------------------


def mean_resultant_length(kappa: float, dim: int) -> float:
    """A_d(κ) = E[xᵀy] under VMF(κ, x), from the Amos-type approximation
    κ / ((d−1)/2 + √(((d+1)/2)² + κ²)) (exact limits κ/d as κ → 0 and 1 as κ → ∞); used only to
    guess ε and pick the grid, never for a guarantee."""
    return kappa / ((dim - 1) / 2 + math.sqrt(((dim + 1) / 2) ** 2 + kappa**2))


def _gdp_delta(eps: float, mu: float) -> float:
    from scipy.special import ndtr

    return float(ndtr(-eps / mu + mu / 2) - math.exp(min(eps, 700)) * ndtr(-eps / mu - mu / 2))


def epsilon_guess(
    kappa: float, dims: tuple[tuple[int, int], ...], sample_rate: float, steps: int, delta: float
) -> float:
    """A rough ε from the μ-GDP limit (each part: μ² = 2·KL = 4κA_d(κ); sampled: Bu et al. 2020's
    CLT μ = q√(T(e^{μ_step²} − 1))). Only picks the grid; the reported ε is the PLD's."""
    from scipy.optimize import brentq

    basic = steps * _max_step_loss(kappa, sum(c for _, c in dims), sample_rate)
    return min(_gdp_guess(kappa, dims, sample_rate, steps, delta, brentq), basic)


def _max_step_loss(kappa: float, parts: int, sample_rate: float) -> float:
    """log(1 + q(e^{2κm} − 1)): the largest loss of one sampled step (the pure bound's ε')."""
    e = 2.0 * kappa * parts
    if e < 700:
        return math.log1p(sample_rate * math.expm1(e))
    return e + math.log(sample_rate) + math.log1p((1 - sample_rate) / sample_rate * math.exp(-e))


def _gdp_guess(
    kappa: float,
    dims: tuple[tuple[int, int], ...],
    sample_rate: float,
    steps: int,
    delta: float,
    brentq,
) -> float:
    mu2_step = sum(c * 4.0 * kappa * mean_resultant_length(kappa, d) for d, c in dims)
    if sample_rate < 1.0:
        mu = sample_rate * math.sqrt(steps * math.expm1(min(mu2_step, 50.0)))
    else:
        mu = math.sqrt(steps * mu2_step)
    if mu <= 0 or _gdp_delta(0.0, mu) <= delta:
        return max(mu, 1e-12)
    hi = 1.0
    while _gdp_delta(hi, mu) > delta:
        hi *= 2
    return brentq(lambda e: _gdp_delta(e, mu) - delta, 0.0, hi, xtol=1e-12)


def choose_grid(
    kappa: float,
    dims: tuple[tuple[int, int], ...],
    sample_rate: float,
    steps: int,
    delta: float,
    precision: float = DEFAULT_PRECISION,
    eps_hint: float | None = None,
) -> float:
    """Grid step h so that the pessimistic ε overstates the bound's ε by about ``precision``·ε:
    the parts' rounding shifts the composed loss by ≈ K_eff·h/2 with K_eff = m·T (q = 1);
    h = precision·ε_guess / K_eff (half the budget, the rest for the curvature of δ(ε)).
    Coarsened if a part's or the run's grid would be too large."""
    m = sum(c for _, c in dims)
    eps = (
        eps_hint if eps_hint is not None else epsilon_guess(kappa, dims, sample_rate, steps, delta)
    )
    # q = 1: every part's rounding shifts the loss, K = m·T. q < 1: measured, the shift is far
    # smaller (a few √(T(qm + 1)), the sampled loss being mostly near 0); refine_grid measures it.
    k_eff = steps * m if sample_rate >= 1.0 else 4.0 * math.sqrt(steps * (sample_rate * m + 1.0))
    h = precision * max(eps, 1e-9) / max(k_eff, 1.0)
    # A part's loss spans at most 4κ, and one part may not exceed MAX_PART_POINTS points.
    h = max(h, 4.0 * kappa / MAX_PART_POINTS)
    # The run's loss spreads over about its mean + 12 standard deviations (μ-GDP guess), and
    # never over more than T times the largest sampled step loss.
    mu2 = sum(c * 4.0 * kappa * mean_resultant_length(kappa, d) for d, c in dims)
    mu2 = steps * (mu2 if sample_rate >= 1.0 else sample_rate**2 * math.expm1(min(mu2, 50.0)))
    spread = min(mu2 / 2 + 12 * math.sqrt(mu2), steps * _max_step_loss(kappa, m, sample_rate)) + 1
    h = max(h, spread / MAX_RUN_POINTS)
    # A power of two keeps the grids of nearby calls equal (cache hits).
    return float(min(2.0 ** math.floor(math.log2(h)), MAX_GRID))


def parse_part_dims(text: str) -> list[int]:
    """'25*6,150*16,256' -> [25]*6 + [150]*16 + [256]: ``D*N`` means N parts of dimension D."""
    dims: list[int] = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        d, _, n = item.partition("*")
        try:
            dim, count = int(d), int(n) if n else 1
        except ValueError:
            raise PrivtoolError(
                f"--part-dims item {item!r} is not allowed: D or D*N with "
                "integers D >= 1 (dimension) and N >= 1 (count)"
            ) from None
        if dim < 1 or count < 1:
            raise PrivtoolError(
                f"--part-dims item {item!r} is not allowed: D or D*N with "
                "integers D >= 1 (dimension) and N >= 1 (count)"
            )
        dims.extend([dim] * count)
    if not dims:
        raise PrivtoolError(
            f"--part-dims={text!r} is not allowed: a comma-separated list of D "
            "or D*N (e.g. 25*6,150*16,256*120)"
        )
    return dims


def format_part_dims(part_dims: Sequence[int]) -> str:
    """Inverse of :func:`parse_part_dims` (grouped by dimension, in first-seen order)."""
    counts = Counter(int(d) for d in part_dims)
    return ",".join(f"{d}*{n}" if n > 1 else str(d) for d, n in counts.items())


def epsilon_for_delta(pld, delta: float) -> float:
    """Smallest ε ≥ 0 with δ(ε) ≤ ``delta`` for a symmetric dp_accounting PLD: the algorithm of
    dp_accounting's ``get_epsilon_for_delta`` (on (L_{i−1}, L_i] δ(ε) = p_∞ + A_i − e^ε B_i with
    A_i = Σ_{j≥i} p_j, B_i = Σ_{j≥i} p_j e^{−L_j}), with B_i kept in log space: dp_accounting's
    own divides by a B that underflows once the losses pass ~700 and then returns ∞."""
    losses, probs, inf_mass = _dense_losses(pld)
    if inf_mass > delta:
        return math.inf
    probs = np.maximum(probs, 0.0)
    up = np.append(np.cumsum(probs[::-1])[::-1], 0.0)
    with np.errstate(divide="ignore"):
        log_low = np.append(np.logaddexp.accumulate((np.log(probs) - losses)[::-1])[::-1], -np.inf)
    # δ at ε = L_i counts the j > i: index i + 1 of the suffix sums.
    d_at = inf_mass + up[1:] - np.exp(losses + log_low[1:])
    i = int(np.argmax(d_at <= delta))  # d_at[-1] = p_∞ ≤ δ, so one exists
    rest = inf_mass + up[i] - delta
    if rest <= 0 or not np.isfinite(log_low[i]):
        eps = float(losses[i - 1]) if i > 0 else 0.0
    else:
        eps = math.log(rest) - float(log_low[i])
        eps = min(max(eps, float(losses[i - 1]) if i > 0 else -math.inf), float(losses[i]))
    return max(eps, 0.0)


@functools.lru_cache(maxsize=64)
def _run_epsilon(
    kappa: float,
    dims: tuple[tuple[int, int], ...],
    sample_rate: float,
    steps: int,
    delta: float,
    h: float,
    pessimistic: bool = True,
) -> float:
    return epsilon_for_delta(run_pld(kappa, dims, sample_rate, steps, h, pessimistic), delta)


def refine_grid(
    kappa: float,
    dims: tuple[tuple[int, int], ...],
    sample_rate: float,
    steps: int,
    delta: float,
    precision: float = DEFAULT_PRECISION,
) -> float:
    """Grid step for ``precision``: the pessimistic ε grows about linearly in h (ε(h) ≈ ε* + c·h,
    the rounding shift), so ε(h) − ε(h/2) estimates the error of ε(h/2); from a coarse grid the
    grid is refined (by 2× to 16× a time, powers of two) until that is ≤ precision·ε. Only
    the precision depends on this, never soundness."""
    coarse = 16 * precision
    h1 = choose_grid(kappa, dims, sample_rate, steps, delta, coarse)
    # The μ-GDP guess can be far off (large κ, q < 1): correct it with coarse runs, whose
    # pessimistic ε is an over-estimate, until the coarse grid settles.
    for _ in range(4):
        e1 = _run_epsilon(kappa, dims, sample_rate, steps, delta, h1)
        if not math.isfinite(e1):
            break
        h_next = choose_grid(kappa, dims, sample_rate, steps, delta, coarse, eps_hint=e1)
        if h_next >= h1 / 4:
            break
        h1 = h_next
    e1 = _run_epsilon(kappa, dims, sample_rate, steps, delta, h1)  # cached unless h1 moved
    h_min = (
        choose_grid(
            kappa,
            dims,
            sample_rate,
            steps,
            delta,
            precision,
            eps_hint=e1 if math.isfinite(e1) else None,
        )
        / 64
    )
    # Error of ε(h/2), assuming linearity in h: ε(h) − ε(h/2). Accept h/2 once it is
    # ≤ precision·ε, else jump to a grid that many times finer (2× to 16×) and test again.
    h_cur, e_cur = h1, e1
    for _ in range(8):
        h_half = h_cur / 2
        e_half = _run_epsilon(kappa, dims, sample_rate, steps, delta, h_half)
        if not (math.isfinite(e_cur) and math.isfinite(e_half)):
            return h_half
        err = e_cur - e_half
        goal = precision * e_half
        if err <= goal or h_half <= h_min:
            return h_half
        factor = min(max(err / goal, 2.0), 16.0)
        h_cur = max(float(2.0 ** math.floor(math.log2(h_half / factor))), h_min)
        e_cur = _run_epsilon(kappa, dims, sample_rate, steps, delta, h_cur)
    return h_cur


def pld_epsilon(
    *,
    kappa: float,
    part_dims: Sequence[int],
    sample_rate: float,
    steps: int,
    delta: float,
    precision: float = DEFAULT_PRECISION,
    optimistic: bool = True,
    h: float | None = None,
) -> dict[str, float]:
    """Tight ε of a DirDP-SGD run for δ (module docstring): ``epsilon_pld`` (pessimistic, sound),
    ``epsilon_pld_optimistic`` (the same grid rounded down: the accountant's exact ε lies
    between the two) and the grid step ``pld_grid``."""
    dims = dims_counter(part_dims)
    if steps == 0 or kappa == 0:
        return {"epsilon_pld": 0.0, "epsilon_pld_optimistic": 0.0, "pld_grid": 0.0}
    grid = h if h is not None else refine_grid(kappa, dims, sample_rate, steps, delta, precision)
    out = {
        "epsilon_pld": _run_epsilon(kappa, dims, sample_rate, steps, delta, grid),
        "pld_grid": grid,
    }
    if optimistic:
        out["epsilon_pld_optimistic"] = _run_epsilon(
            kappa, dims, sample_rate, steps, delta, grid, pessimistic=False
        )
    return out


def pld_delta(
    *,
    kappa: float,
    part_dims: Sequence[int],
    sample_rate: float,
    steps: int,
    epsilon: float,
    h: float,
    pessimistic: bool = True,
) -> float:
    """δ(ε) of a DirDP-SGD run on the grid h (pessimistic: an upper bound)."""
    if steps == 0 or kappa == 0:
        return 0.0
    dims = dims_counter(part_dims)
    return float(
        run_pld(kappa, dims, sample_rate, steps, h, pessimistic).get_delta_for_epsilon(epsilon)
    )
