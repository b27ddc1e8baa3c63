"""ε for Gaussian DP-SGD (Abadi et al. 2016), a thin layer over Opacus' accountants.

Poisson sampling at rate q, σ = ``noise_multiplier``, T steps, add/remove-one neighbours: the
numbers are Opacus' own (``RDPAccountant`` / ``PRVAccountant`` with
``history=[(noise_multiplier, sample_rate, steps)]``). What this module adds is validation and
honesty: PRV (Gopi et al. 2021) discretises the privacy loss on a grid whose size grows with ε
and with √T, so at large ε or many steps it can run out of memory, overflow to ``inf`` or raise.
That is detected (before the call, from the grid size, and after it, from the result) and the
answer falls back to RDP with a warning that says so; a wrong ε is never returned silently.
"""

from __future__ import annotations

import math
import numbers
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from privtool.errors import PrivtoolError

ACCOUNTANTS = ("rdp", "prv")

#: Largest PRV discretisation grid (points) attempted; beyond it PRV needs GBs of memory and
#: tens of seconds (or is killed), so RDP is used instead, with a warning.
MAX_PRV_GRID_POINTS = 10_000_000

#: Opacus' PRVAccountant.get_epsilon defaults (eps_error=0.01, delta_error=delta/1000).
_PRV_EPS_ERROR = 0.01


@dataclass(frozen=True)
class EpsilonResult:
    """ε of a run, the accountant that actually produced it, and why, if not the one asked."""

    epsilon: float
    accountant: str
    warning: str | None = None


# -- validation (shared with privtool.accounting.vmf) -------------------------------------------


def _real(
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float in the interval [low|(low, high]|), else a PrivtoolError naming it."""
    lo = "(" if low_open else "["
    hi = ")" if high_open or math.isinf(high) else "]"
    allowed = f"a number in {lo}{low:g}, {high:g}{hi}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PrivtoolError(f"{name}={value!r} is not allowed: {allowed}")
    x = float(value)
    ok = (
        not math.isnan(x)
        and (x > low if low_open else x >= low)
        and (x < high if (high_open or math.isinf(high)) else x <= high)
    )
    if not ok:
        raise PrivtoolError(f"{name}={value!r} is not allowed: {allowed}")
    return x


def _count(name: str, value: object, *, low: int) -> int:
    """``value`` as an integer >= low, else a PrivtoolError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise PrivtoolError(f"{name}={value!r} is not allowed: an integer >= {low}")
    return int(value)


def _accountant(value: object) -> str:
    if value not in ACCOUNTANTS:
        raise PrivtoolError(f"accountant={value!r} is not allowed: one of {', '.join(ACCOUNTANTS)}")
    return str(value)


def _check_run(*, sample_rate: object, steps: object, delta: object) -> tuple[float, int, float]:
    q = _real("sample_rate", sample_rate, low=0.0, high=1.0, low_open=True)
    n = _count("steps", steps, low=0)
    d = _real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    return q, n, d


# -- Opacus calls --------------------------------------------------------------------------------


def _rdp_epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, steps)]
    with _quiet_rdp_orders():
        return float(acc.get_epsilon(delta=delta))


@contextmanager
def _quiet_rdp_orders() -> Iterator[None]:
    """Silence Opacus' "optimal order is the largest/smallest alpha": the bound is valid, only
    possibly loose (tiny or huge ε, e.g. paper 1's ε = 300,000 anchor)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha")
        yield


def prv_grid_points(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> float:
    """Size of the grid Opacus' PRVAccountant would discretise on (its ``_get_domain``: a
    safe half-width L from RDP, mesh eps_error / √(T·log(12/delta_error)/2); Gopi et al. 2021,
    Remark 5.6). Cheap: RDP calls only."""
    from opacus.accountants.analysis.prv import (
        PoissonSubsampledGaussianPRV,
        compute_safe_domain_size,
    )

    delta_error = delta / 1000
    half_width = compute_safe_domain_size(
        prvs=[PoissonSubsampledGaussianPRV(sample_rate, noise_multiplier)],
        max_self_compositions=[steps],
        eps_error=_PRV_EPS_ERROR,
        delta_error=delta_error,
    )
    mesh = _PRV_EPS_ERROR / math.sqrt(steps * math.log(12 / delta_error) / 2)
    return 2 * float(half_width) / mesh


def _prv_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> tuple[float | None, str | None]:
    """(ε, None) from Opacus' PRVAccountant, or (None, why it could not be trusted)."""
    from opacus.accountants import PRVAccountant

    try:
        points = prv_grid_points(
            noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=delta
        )
        if not points <= MAX_PRV_GRID_POINTS:
            return None, (
                f"PRV accountant skipped (its grid would need {points:.3g} points, "
                f"more than {MAX_PRV_GRID_POINTS:.3g}); fell back to RDP"
            )
        acc = PRVAccountant()
        acc.history = [(noise_multiplier, sample_rate, steps)]
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            eps = float(acc.get_epsilon(delta=delta))
    except (ArithmeticError, ValueError, RuntimeError, MemoryError, IndexError) as err:
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:120]
        return None, f"PRV accountant failed ({reason}); fell back to RDP"
    if not (math.isfinite(eps) and eps >= 0):
        return None, f"PRV accountant failed (returned epsilon={eps}); fell back to RDP"
    return eps, None


# -- public API ----------------------------------------------------------------------------------


def gaussian_epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> EpsilonResult:
    """(ε, δ) of T steps of Poisson-subsampled Gaussian DP-SGD, from Opacus' RDP (Mironov 2017)
    or PRV (Gopi et al. 2021) accountant; PRV falls back to RDP, with a warning, when it fails."""
    sigma = _real("noise_multiplier", noise_multiplier, low=0.0)
    q, n, d = _check_run(sample_rate=sample_rate, steps=steps, delta=delta)
    acc = _accountant(accountant)
    if n == 0:
        return EpsilonResult(0.0, acc)  # nothing released (Opacus: empty history -> 0)
    if sigma == 0:
        return EpsilonResult(math.inf, acc)
    if acc == "prv":
        eps, why = _prv_epsilon(noise_multiplier=sigma, sample_rate=q, steps=n, delta=d)
        if eps is not None:
            return EpsilonResult(eps, "prv")
        return EpsilonResult(
            _rdp_epsilon(noise_multiplier=sigma, sample_rate=q, steps=n, delta=d), "rdp", why
        )
    return EpsilonResult(
        _rdp_epsilon(noise_multiplier=sigma, sample_rate=q, steps=n, delta=d), "rdp"
    )


def gaussian_noise_multiplier(
    *,
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
    epsilon_tolerance: float = 0.01,
) -> float:
    """Smallest σ (to ``epsilon_tolerance`` in ε) with ε(σ) ≤ ``target_epsilon``.

    RDP is Opacus' ``get_noise_multiplier`` itself. PRV runs the same bisection over
    :func:`gaussian_epsilon`, so that a σ whose PRV grid would not fit is judged by RDP instead
    of crashing the process (Opacus' own search would call PRV at every trial σ); the returned σ
    then satisfies ε ≤ target under whichever accountant :func:`gaussian_epsilon` reports for it.
    """
    target = _real("target_epsilon", target_epsilon, low=0.0, low_open=True)
    q, n, d = _check_run(sample_rate=sample_rate, steps=steps, delta=delta)
    acc = _accountant(accountant)
    tol = _real("epsilon_tolerance", epsilon_tolerance, low=0.0, low_open=True)
    if n == 0:
        return 0.0  # no step is released: no noise needed
    if math.isinf(target):
        return 0.0
    too_low = (
        f"target_epsilon={target_epsilon!r} is not reachable with accountant={acc}, "
        f"sample_rate={q:g}, steps={n}, delta={d:g}: even noise_multiplier=1e6 gives more "
        f"(RDP's conversion has a floor); raise target_epsilon or delta, or try prv"
    )
    if acc == "rdp":
        from opacus.accountants.utils import get_noise_multiplier

        try:
            with _quiet_rdp_orders():
                return float(
                    get_noise_multiplier(
                        target_epsilon=target,
                        target_delta=d,
                        sample_rate=q,
                        steps=n,
                        accountant="rdp",
                        epsilon_tolerance=tol,
                    )
                )
        except ValueError as err:
            raise PrivtoolError(too_low) from err

    def eps_of(sigma: float) -> float:
        return gaussian_epsilon(
            noise_multiplier=sigma, sample_rate=q, steps=n, delta=d, accountant="prv"
        ).epsilon

    # Bracket from RDP (PRV is usually the tighter of the two), then Opacus' bisection rule.
    try:
        from opacus.accountants.utils import get_noise_multiplier

        with _quiet_rdp_orders():
            high = float(
                get_noise_multiplier(
                    target_epsilon=target,
                    target_delta=d,
                    sample_rate=q,
                    steps=n,
                    accountant="rdp",
                    epsilon_tolerance=tol,
                )
            )
    except ValueError as err:
        raise PrivtoolError(too_low) from err
    eps_high = eps_of(high)
    while eps_high > target:
        high *= 2
        if high > 1e6:
            raise PrivtoolError(too_low)
        eps_high = eps_of(high)
    low = 0.0
    while target - eps_high > tol and high - low > 1e-9 * high:
        mid = (low + high) / 2
        eps = eps_of(mid)
        if eps < target:
            high, eps_high = mid, eps
        else:
            low = mid
    return high
