r"""One unsampled step of DirDP-SGD as a privacy-loss distribution (PLD): each part's loss PMF
for VMF noise, rounded onto a grid, and the parts convolved.

This is the construction half of the tight VMF accountant; :mod:`privtool.accounting.vmf_pld`
adds fixed-size sampling, the T-fold composition, the grid choice and the reported ε/δ.

Derivation
----------
**One part (relation: its unit vector x replaced by any unit vector x').** VMF(κ, x) has density
c_d(κ) e^{κ xᵀy} on S^{d-1}, so the privacy loss at output y is
ℓ(y) = log p_x(y)/p_{x'}(y) = κ (x − x')ᵀy. For the antipodal pair x' = −x it is ℓ = 2κ t with
t = xᵀy. The density of t under VMF(κ, x) is ∝ e^{κt}(1 − t²)^{(d−3)/2} on [−1, 1] (the surface
measure of the slice {xᵀy = t} is ∝ (1 − t²)^{(d−3)/2}); under VMF(κ, −x) it is the mirror image
∝ e^{−κt}(1 − t²)^{(d−3)/2}. Substituting t = cos φ gives the density ∝ e^{κ cos φ} sin^{d−2} φ
on [0, π], which is smooth at both ends for every d ≥ 2 (no end-point singularity at d = 2) and
is integrated here in log space (κ(cos φ − 1) + (d−2) log sin φ, 8-point Gauss–Legendre on a
grid that resolves both the κ and the d scale), so κ from 1e-4 to 1e6 and d from 1 to model size
neither overflow nor lose the mass (tested for d = 1, 2, 3, 784, 61706). d = 1 (S⁰ = {±1}) is two atoms: loss ±2κ with probabilities
1/(1 + e^{∓2κ}), i.e. randomized response with ε = 2κ. The pair is symmetric (t ↦ −t maps one
ordering onto the other), so one PLD serves both orders.

*Dominance.* For x, x' at angle θ the loss is 2κ sin(θ/2)·s with s = uᵀy,
u = (x − x')/‖x − x'‖. The antipodal pair (θ = π) dominates every θ: its hockey-stick curve
δ_θ(ε) = E_{y∼VMF(x)}(1 − e^{ε − ℓ(y)})₊ is the largest for every ε. This is verified
numerically (a 2-D quadrature of δ_θ over the joint law of (xᵀy, uᵀy), θ on a grid in (0, π],
d ∈ {2, 3, 5, 20, 100}, κ ∈ {0.05, 0.5, 5, 50}, ε on a grid): the test
``tests/test_vmf_pld.py::test_antipodal_pair_dominates_every_angle`` keeps it. The data-level
relation is replace-one, so the worst case over x' ∈ S^{d-1} for every x is what is needed, and
by rotation invariance only θ matters.

**One step (replace-one, fixed batch).** Each per-sample gradient is cut into m parts of
dimensions d_1 … d_m, each scaled to unit norm and released through its own independent VMF draw;
the other b − 1 records' draws are identically distributed under both neighbours (a common
independent factor leaves the hockey-stick divergence unchanged), and summing is
post-processing. Each part's pair is dominated by the antipodal pair of its dimension, and a
product of dominating pairs dominates the product of the mechanisms (Zhu, Dong & Wang 2022,
Theorem 10), so one step's PLD is the convolution of the m parts' PLDs (parts of equal dimension
share one PLD, self-composed).

**Discretization (pessimistic, Meiser & Mohammadi 2018; dp_accounting).** A part's loss is
rounded *up* to the grid hℤ: the mass of each loss interval ((k−1)h, kh] is put on kh
(``PrivacyLossDistribution.create_from_rounded_probability``, pessimistic). The lower tail of mass
≤ 1e-15 goes onto the lowest kept point (rounded up) and the upper tail of mass ≤ 1e-15 to the
infinite loss. The hockey-stick functional Σ p_k (1 − e^{ε − kh})₊ + p_∞ is increasing in each loss,
so each step's δ(ε) is over-, never under-stated, and composition keeps this (dp_accounting's
pessimistic PLDs); the grid step h is chosen in :mod:`privtool.accounting.vmf_pld`. The same
intervals with mass on (k−1)h (rounded *down*, lower tail dropped, upper tail on the top point) give an
optimistic PLD: the exact ε of the accountant lies between the two (``epsilon_pld_optimistic``).
Losses below −600 (probability ≤ e^{−600} under the first distribution) are rounded up to −600.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable

import numpy as np
from scipy.special import logsumexp

from privtool.errors import PrivtoolError

#: Tail mass dropped (pessimistically) per part PLD and per composition.
TAIL_MASS = 1e-15
#: Largest number of grid points one part's PLD may have; beyond it the grid is coarsened.
MAX_PART_POINTS = 2_000_000
#: Losses below −LOSS_FLOOR are rounded up to it (P[ℓ < −a] ≤ e^{−a}; e^{−ℓ} must not overflow).
LOSS_FLOOR = 600.0

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


class GridTooLarge(PrivtoolError):
    """The loss range needs more grid points than allowed (huge κ·m): only the pure bound."""


# -- one part -------------------------------------------------------------------------------------


def _log_density_phi(phi: np.ndarray, kappa: float, dim: int) -> np.ndarray:
    """log of the (unnormalised) density of φ = arccos(xᵀy) under VMF(κ, x): κ(cos φ − 1) +
    (d − 2) log sin φ, shifted by −κ so that it never overflows."""
    out = kappa * (np.cos(phi) - 1.0)
    if dim != 2:
        out = out + (dim - 2) * np.log(np.sin(phi))
    return out


def _log_interval_masses(edges: np.ndarray, kappa: float, dim: int) -> np.ndarray:
    """log ∫ over [edges[i], edges[i+1]] of the unnormalised φ-density (8-point Gauss–Legendre)."""
    a, b = edges[:-1], edges[1:]
    half = 0.5 * (b - a)
    nodes = (0.5 * (a + b))[:, None] + half[:, None] * _GL_NODES[None, :]
    logf = _log_density_phi(nodes, kappa, dim)
    with np.errstate(divide="ignore"):
        log_w = np.log(half)[:, None] + np.log(_GL_WEIGHTS)[None, :]
    return logsumexp(logf + log_w, axis=1)


def _base_grid(kappa: float, dim: int) -> np.ndarray:
    """φ grid on [0, π] fine enough to resolve both the κ scale (width ~1/√κ near φ = 0) and the
    d scale (width ~1/√d near φ = π/2): spacing ≤ 0.05/√(κ + d), at least 400 intervals."""
    n = int(max(400, math.ceil(math.pi * math.sqrt(kappa + dim) / 0.05)))
    return np.linspace(0.0, math.pi, n + 1)


def _phi_of_loss(loss: np.ndarray, kappa: float) -> np.ndarray:
    """φ with 2κ cos φ = loss, computed as 2 arcsin √((1 − t)/2) (accurate near t = 1)."""
    s = np.clip((2.0 * kappa - loss) / (4.0 * kappa), 0.0, 1.0)
    return 2.0 * np.arcsin(np.sqrt(s))


@functools.lru_cache(maxsize=256)
def part_loss_pmf(
    kappa: float, dim: int, h: float, pessimistic: bool = True
) -> tuple[dict[int, float], float]:
    """Rounded PMF of one part's privacy loss (antipodal pair, dimension ``dim``, concentration
    ``kappa``) on the grid hℤ: ({k: mass of loss k·h}, infinity mass). Rounded up (pessimistic)
    or down (optimistic); see the module docstring."""
    if dim == 1:
        loss = 2.0 * kappa
        low = max(-loss, -LOSS_FLOOR) if pessimistic else -loss
        k_hi = math.ceil(loss / h) if pessimistic else math.floor(loss / h)
        k_lo = math.ceil(low / h) if pessimistic else math.floor(low / h)
        p_hi = 1.0 / (1.0 + math.exp(-2.0 * kappa))
        p_lo = 1.0 / (1.0 + math.exp(2.0 * kappa)) if kappa < 350 else 0.0
        pmf: Counter[int] = Counter()
        pmf[k_hi] += p_hi
        if p_lo > 0:
            pmf[k_lo] += p_lo
        return dict(pmf), 0.0
    # Pass 1: the whole distribution on the base grid -> normaliser and the tails to cut.
    base = _base_grid(kappa, dim)
    log_m = _log_interval_masses(base, kappa, dim)
    log_z = float(logsumexp(log_m))
    m = np.exp(log_m - log_z)
    # φ ascending = loss descending. Upper-loss tail: the first intervals (φ near 0).
    cum_top = np.cumsum(m)
    cum_bottom = np.cumsum(m[::-1])
    n_top = int(np.searchsorted(cum_top, TAIL_MASS, side="right"))  # intervals cut at top
    n_bottom = int(np.searchsorted(cum_bottom, TAIL_MASS, side="right"))
    n_top = min(n_top, len(m) - 1)
    n_bottom = min(n_bottom, len(m) - 1 - n_top)
    phi_lo, phi_hi = base[n_top], base[len(base) - 1 - n_bottom]
    top_mass = float(cum_top[n_top - 1]) if n_top else 0.0
    bottom_mass = float(cum_bottom[n_bottom - 1]) if n_bottom else 0.0
    loss_hi = 2.0 * kappa * math.cos(phi_lo)
    loss_lo = 2.0 * kappa * math.cos(phi_hi)
    k_lo = math.floor(loss_lo / h)
    k_hi = math.ceil(loss_hi / h)
    if k_hi - k_lo > MAX_PART_POINTS:
        raise GridTooLarge(
            f"one part's loss (kappa={kappa:g}, d={dim}) spans {k_hi - k_lo} grid points at h={h:g}"
        )
    # Pass 2: intervals between every loss-grid edge and every base point in [phi_lo, phi_hi].
    loss_edges = np.arange(k_lo, k_hi + 1, dtype=float) * h
    phi_edges = _phi_of_loss(loss_edges, kappa)
    inner = base[n_top : len(base) - n_bottom]
    edges = np.unique(np.concatenate([phi_edges, inner]))
    edges = edges[(edges >= phi_lo) & (edges <= phi_hi)]
    masses = np.exp(_log_interval_masses(edges, kappa, dim) - log_z)
    mid_loss = 2.0 * kappa * np.cos(0.5 * (edges[:-1] + edges[1:]))
    # Each sub-interval lies inside one loss cell ((k−1)h, kh]: k from its midpoint.
    k_up = np.clip(np.ceil(mid_loss / h).astype(np.int64), k_lo + 1, k_hi)
    k = k_up if pessimistic else k_up - 1
    base_k = int(k.min()) if len(k) else k_lo
    probs = np.bincount(k - base_k, weights=masses)
    infinity = 0.0
    if pessimistic:
        probs[0] += bottom_mass  # lower tail rounded up onto the lowest point
        infinity = top_mass  # upper tail: infinite loss
    else:
        probs[-1] += top_mass  # upper tail rounded down onto the top point
    pmf_out = {base_k + i: float(p) for i, p in enumerate(probs) if p > 0}
    return pmf_out, infinity


def part_pld(kappa: float, dim: int, h: float, pessimistic: bool = True):
    """dp_accounting PLD of one part (symmetric pair), see :func:`part_loss_pmf`."""
    from dp_accounting.pld import privacy_loss_distribution as pldlib

    pmf, inf_mass = part_loss_pmf(float(kappa), int(dim), float(h), bool(pessimistic))
    return pldlib.PrivacyLossDistribution.create_from_rounded_probability(
        pmf, inf_mass, h, pessimistic_estimate=pessimistic
    )


# -- one step: the parts convolved ----------------------------------------------------------------


def dims_counter(part_dims: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Sorted ((dimension, count), …) of the parts: parts of equal dimension share one PLD."""
    return tuple(sorted(Counter(int(d) for d in part_dims).items()))


def step_pld(kappa: float, dims: tuple[tuple[int, int], ...], h: float, pessimistic: bool = True):
    """One unsampled step: the convolution of every part's PLD (each with its own dimension)."""
    out = None
    for dim, count in dims:
        pld = part_pld(kappa, dim, h, pessimistic)
        if count > 1:
            pld = pld.self_compose(count, tail_mass_truncation=TAIL_MASS)
        out = pld if out is None else out.compose(pld, tail_mass_truncation=TAIL_MASS)
    return out
