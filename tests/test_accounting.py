"""Accountants: Gaussian pinned to Opacus, VMF's exact composition checked against dp_accounting's
PLD, Kairouz et al.'s closed form and the Gaussian-DP limit, plus properties (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import norm

from privtool.accounting import (
    EpsilonResult,
    amplify_without_replacement,
    compose_pure_dp,
    compose_pure_dp_delta,
    gaussian_epsilon,
    gaussian_noise_multiplier,
    kappa_from_nominal,
    vmf_epsilon,
    vmf_kappa_for_epsilon,
    vmf_nominal_epsilon,
    vmf_step_epsilon,
)
from privtool.accounting import gaussian as gaussian_module
from privtool.errors import PrivtoolError

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the:UserWarning")

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Opacus' RDP series costs ~0.1 s per call at 0.1 < q < 1 (q = 1 is closed form): the Gaussian
# properties draw q from the cheap ranges and fewer examples, to keep this file under 30 s.
GAUSSIAN_PROPERTY = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
GAUSSIAN_Q = st.floats(1e-3, 0.1) | st.just(1.0)


def opacus_epsilon(accountant: str, sigma: float, q: float, steps: int, delta: float) -> float:
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    acc.history = [(sigma, q, steps)]
    return acc.get_epsilon(delta=delta)


def pld_epsilon(eps0: float, steps: int, delta: float, interval: float = 1e-4) -> float:
    from dp_accounting.pld import common
    from dp_accounting.pld import privacy_loss_distribution as pld

    dist = pld.from_privacy_parameters(
        common.DifferentialPrivacyParameters(eps0, 0), value_discretization_interval=interval
    )
    return dist.self_compose(steps).get_epsilon_for_delta(delta)


# -- Gaussian: parity with Opacus ----------------------------------------------------------------


def test_pinned_regression_value():
    """Opacus' own pinned value: σ=1.5, q=0.04, 2250 steps, δ=1e-5, RDP -> ε ≈ 7.329."""
    res = gaussian_epsilon(noise_multiplier=1.5, sample_rate=0.04, steps=2250, delta=1e-5)
    assert res == EpsilonResult(epsilon=res.epsilon, accountant="rdp", warning=None)
    assert res.epsilon == pytest.approx(7.3291111714, abs=1e-8)
    assert res.epsilon == opacus_epsilon("rdp", 1.5, 0.04, 2250, 1e-5)


@pytest.mark.parametrize(
    "sigma,q,steps,delta",
    [
        (1.5, 0.04, 2250, 1e-5),
        (1.0, 0.01, 1000, 1e-5),
        (0.8, 0.1, 100, 1e-6),
        (4.0, 1.0, 10, 1e-5),
        (0.6, 0.004, 50_000, 1e-7),
        (2.0, 0.5, 1, 1e-3),
    ],
)
def test_rdp_equals_opacus(sigma, q, steps, delta):
    res = gaussian_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta)
    assert (res.accountant, res.warning) == ("rdp", None)
    assert res.epsilon == opacus_epsilon("rdp", sigma, q, steps, delta)


@pytest.mark.parametrize("sigma,q,steps,delta", [(1.5, 0.04, 2250, 1e-5), (1.0, 0.02, 300, 1e-6)])
def test_prv_equals_opacus(sigma, q, steps, delta):
    res = gaussian_epsilon(
        noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta, accountant="prv"
    )
    assert (res.accountant, res.warning) == ("prv", None)
    assert res.epsilon == opacus_epsilon("prv", sigma, q, steps, delta)
    # PRV is the tighter of the two here, and both are upper bounds on the same quantity.
    assert res.epsilon <= opacus_epsilon("rdp", sigma, q, steps, delta)


def test_zero_noise_is_infinite_and_zero_steps_is_zero():
    for acc in ("rdp", "prv"):
        inf = gaussian_epsilon(
            noise_multiplier=0.0, sample_rate=0.1, steps=10, delta=1e-5, accountant=acc
        )
        assert inf.epsilon == math.inf and inf.accountant == acc
        none = gaussian_epsilon(
            noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=1e-5, accountant=acc
        )
        assert none.epsilon == 0.0
    assert (
        gaussian_noise_multiplier(target_epsilon=1.0, sample_rate=0.1, steps=0, delta=1e-5) == 0.0
    )


def test_prv_at_large_epsilon_falls_back_to_rdp():
    """A real setting where PRV's grid (5e8 points) would exhaust memory: RDP + a warning."""
    res = gaussian_epsilon(
        noise_multiplier=0.7, sample_rate=0.1, steps=100_000, delta=1e-5, accountant="prv"
    )
    assert res.accountant == "rdp"
    assert "fell back to RDP" in res.warning and "PRV" in res.warning
    assert res.epsilon == opacus_epsilon("rdp", 0.7, 0.1, 100_000, 1e-5)


@pytest.mark.parametrize("failure", ["raises", "inf", "nan"])
def test_prv_failure_falls_back_to_rdp(monkeypatch, failure):
    from opacus.accountants import PRVAccountant

    def broken(self, delta, **kwargs):
        if failure == "raises":
            raise RuntimeError("discretisation went wrong")
        return float(failure)

    monkeypatch.setattr(PRVAccountant, "get_epsilon", broken)
    res = gaussian_epsilon(
        noise_multiplier=1.0, sample_rate=0.01, steps=100, delta=1e-5, accountant="prv"
    )
    assert res.accountant == "rdp"
    assert res.warning.startswith("PRV accountant failed") and "fell back to RDP" in res.warning
    if failure == "raises":
        assert "discretisation went wrong" in res.warning
    assert res.epsilon == opacus_epsilon("rdp", 1.0, 0.01, 100, 1e-5)


def test_prv_grid_guard(monkeypatch):
    monkeypatch.setattr(gaussian_module, "MAX_PRV_GRID_POINTS", 10)
    res = gaussian_epsilon(
        noise_multiplier=1.5, sample_rate=0.04, steps=2250, delta=1e-5, accountant="prv"
    )
    assert res.accountant == "rdp" and "skipped" in res.warning


@pytest.mark.parametrize(
    "target,q,steps,delta",
    [(7.3291111714386545, 0.04, 2250, 1e-5), (1.0, 0.01, 1000, 1e-5), (8.0, 1.0, 50, 1e-6)],
)
def test_noise_multiplier_round_trip_rdp(target, q, steps, delta):
    from opacus.accountants.utils import get_noise_multiplier

    sigma = gaussian_noise_multiplier(
        target_epsilon=target, sample_rate=q, steps=steps, delta=delta
    )
    assert sigma == get_noise_multiplier(
        target_epsilon=target, target_delta=delta, sample_rate=q, steps=steps, accountant="rdp"
    )
    eps = gaussian_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta).epsilon
    assert target - 0.01 <= eps <= target
    if target == 7.3291111714386545:
        assert sigma == pytest.approx(1.5, abs=0.01)


def test_noise_multiplier_round_trip_prv():
    kw = dict(sample_rate=0.02, steps=300, delta=1e-5)
    sigma = gaussian_noise_multiplier(target_epsilon=2.0, accountant="prv", **kw)
    res = gaussian_epsilon(noise_multiplier=sigma, accountant="prv", **kw)
    assert res.accountant == "prv"
    assert 2.0 - 0.01 <= res.epsilon <= 2.0
    assert sigma <= gaussian_noise_multiplier(target_epsilon=2.0, accountant="rdp", **kw)


def test_unreachable_target_is_a_clear_error():
    with pytest.raises(PrivtoolError, match="target_epsilon"):
        gaussian_noise_multiplier(target_epsilon=1e-12, sample_rate=1.0, steps=10**6, delta=1e-9)


@GAUSSIAN_PROPERTY
@given(
    sigma=st.floats(0.3, 20),
    q=GAUSSIAN_Q,
    steps=st.integers(1, 10_000),
    more=st.integers(1, 10_000),
    factor=st.floats(1.0, 4.0),
)
def test_gaussian_epsilon_monotone(sigma, q, steps, more, factor):
    def eps(s, n):
        return gaussian_epsilon(noise_multiplier=s, sample_rate=q, steps=n, delta=1e-5).epsilon

    base = eps(sigma, steps)
    assert eps(sigma, steps + more) >= base * (1 - 1e-12)  # more steps: no less ε
    assert eps(sigma * factor, steps) <= base * (1 + 1e-12)  # more noise: no more ε


@GAUSSIAN_PROPERTY
@given(target=st.floats(0.5, 30), q=GAUSSIAN_Q, steps=st.integers(1, 5000))
def test_noise_multiplier_never_overshoots(target, q, steps):
    sigma = gaussian_noise_multiplier(target_epsilon=target, sample_rate=q, steps=steps, delta=1e-5)
    eps = gaussian_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=1e-5).epsilon
    assert eps <= target


# -- exact optimal composition of pure DP --------------------------------------------------------


@pytest.mark.parametrize(
    "eps0,steps,delta",
    [
        (0.5, 10, 1e-5),
        (2**-3, 100, 1e-6),
        (1.0, 1, 1e-3),
        (2**-4, 1000, 1e-5),
        (2.0, 5, 1e-5),
        (2**-7, 10_000, 1e-5),
        (0.25, 50, 1e-2),
        (4.0, 20, 1e-9),
    ],
)
def test_composition_matches_dp_accounting_pld(eps0, steps, delta):
    """dp_accounting's PLD of ε0-DP is randomized response too; with ±ε0 exactly on its grid
    (binary fractions, interval 2^-14) it is exact up to FFT noise, so the two must agree."""
    ours = compose_pure_dp(epsilon=eps0, steps=steps, delta=delta)
    theirs = pld_epsilon(eps0, steps, delta, interval=2.0**-14)
    assert ours == pytest.approx(theirs, rel=1e-7)
    assert ours <= steps * eps0


@pytest.mark.parametrize("eps0,steps,delta", [(0.3, 50, 1e-2), (0.1, 100, 1e-6), (0.7, 30, 1e-5)])
def test_composition_below_pessimistic_pld(eps0, steps, delta):
    """Off its grid PLD rounds losses up (pessimistic): ours is never above it, and close."""
    ours = compose_pure_dp(epsilon=eps0, steps=steps, delta=delta)
    theirs = pld_epsilon(eps0, steps, delta)
    assert ours <= theirs + 1e-9
    assert ours == pytest.approx(theirs, rel=1e-3)


@pytest.mark.parametrize("eps0,steps", [(0.3, 7), (1.0, 12), (0.05, 30), (2.5, 4)])
def test_composition_matches_kairouz_closed_form(eps0, steps):
    """Kairouz, Oh & Viswanath 2015, Thm 3.3: at ε = (T − 2i)ε0,
    δ_i = Σ_{l<i} C(T,l)(e^{ε0(T−l)} − e^{ε0(T−2i+l)}) / (1 + e^{ε0})^T."""
    for i in range(1, steps // 2 + 1):
        eps = (steps - 2 * i) * eps0
        delta = (
            sum(
                math.comb(steps, l)
                * (math.exp(eps0 * (steps - l)) - math.exp(eps0 * (steps - 2 * i + l)))
                for l in range(i)
            )
            / (1 + math.exp(eps0)) ** steps
        )
        assert compose_pure_dp_delta(epsilon=eps0, steps=steps, total_epsilon=eps) == pytest.approx(
            delta, rel=1e-10
        )
        if delta > 1e-300 and eps > 0:
            assert compose_pure_dp(epsilon=eps0, steps=steps, delta=delta) == pytest.approx(
                eps, rel=1e-9, abs=1e-12
            )


@pytest.mark.parametrize("eps0", [1e-6, 0.01, 1.0, 5.0, 1e4])
@pytest.mark.parametrize("delta", [1e-3, 1e-5, 1e-10])
def test_single_step_is_exact(eps0, delta):
    """T = 1: δ(ε) = p(1 − e^{ε−ε0}) with p = 1/(1 + e^{−ε0}), so ε = ε0 + log(1 − δ/p) → ε0."""
    expected = max(0.0, eps0 + math.log1p(-delta * (1 + math.exp(-eps0))))
    got = compose_pure_dp(epsilon=eps0, steps=1, delta=delta)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert eps0 - 2.5 * delta <= got <= eps0


@pytest.mark.parametrize("eps0,steps", [(1e-3, 10**6), (1e-5, 10**5)])
def test_many_small_steps_approach_gaussian_dp(eps0, steps):
    """CLT: T-fold RR with tiny ε0 tends to μ-GDP, μ = ε0√T (Dong, Roth & Su 2019, Thm 3.4)."""
    mu = eps0 * math.sqrt(steps)
    delta = 1e-5

    def gdp_excess(eps):
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    expected = brentq(gdp_excess, 0.0, 50 * mu + 10)
    assert compose_pure_dp(epsilon=eps0, steps=steps, delta=delta) == pytest.approx(
        expected, rel=2e-2
    )


@pytest.mark.parametrize("eps0", [1e-6, 1e-2, 10.0, 1e4])
def test_composition_is_stable_at_the_extremes(eps0):
    steps = 10**6
    eps = compose_pure_dp(epsilon=eps0, steps=steps, delta=1e-5)
    assert math.isfinite(eps) and 0 < eps <= steps * eps0
    if eps0 >= 1e3:  # every step is (all but) deterministic: ε ≈ T·ε0
        assert eps >= steps * eps0 * (1 - 1e-9)


@PROPERTY
@given(
    eps0=st.floats(1e-4, 20),
    steps=st.integers(1, 3000),
    more=st.integers(0, 3000),
    delta=st.floats(1e-12, 0.5),
)
def test_composition_properties(eps0, steps, delta, more):
    eps = compose_pure_dp(epsilon=eps0, steps=steps, delta=delta)
    assert 0 <= eps <= steps * eps0
    # (ε, δ) holds exactly: the computed ε never under-reports.
    assert compose_pure_dp_delta(epsilon=eps0, steps=steps, total_epsilon=eps) <= delta
    assert compose_pure_dp(epsilon=eps0, steps=steps + more, delta=delta) >= eps * (1 - 1e-12)
    assert compose_pure_dp(epsilon=eps0 * 1.5, steps=steps, delta=delta) >= eps * (1 - 1e-12)


# -- amplification by sampling without replacement ----------------------------------------------


@pytest.mark.parametrize("eps,q", [(1.0, 0.1), (2.0, 0.01), (0.5, 0.5), (10.0, 0.001)])
def test_amplification_formula(eps, q):
    expected = math.log(1 + q * (math.exp(eps) - 1))
    assert amplify_without_replacement(epsilon=eps, sample_rate=q) == pytest.approx(
        expected, rel=1e-12
    )


def test_amplification_edges():
    for eps in (0.0, 1e-9, 1.0, 50.0, 1e4):
        assert amplify_without_replacement(epsilon=eps, sample_rate=1.0) == eps
    # tiny ε: ε' ≈ qε (no cancellation); huge ε: ε' = ε + log q (no overflow)
    assert amplify_without_replacement(epsilon=1e-12, sample_rate=0.01) == pytest.approx(
        1e-14, rel=1e-6
    )
    assert amplify_without_replacement(epsilon=1e4, sample_rate=0.01) == pytest.approx(
        1e4 + math.log(0.01), rel=1e-15
    )


@PROPERTY
@given(
    eps=st.floats(0, 2000),
    q=st.floats(1e-6, 1.0),
    factor=st.floats(1.0, 3.0),
    qfactor=st.floats(0.0, 1.0),
)
def test_amplification_monotone_and_bounded(eps, q, factor, qfactor):
    amp = amplify_without_replacement(epsilon=eps, sample_rate=q)
    assert 0 <= amp <= eps * (1 + 1e-12)
    assert amplify_without_replacement(epsilon=eps * factor, sample_rate=q) >= amp * (1 - 1e-12)
    q2 = q + (1 - q) * qfactor
    assert amplify_without_replacement(epsilon=eps, sample_rate=q2) >= amp * (1 - 1e-12)


# -- VMF -----------------------------------------------------------------------------------------


def test_vmf_per_step_quantities():
    assert vmf_step_epsilon(kappa=3.0, parts=10) == 60.0
    assert vmf_nominal_epsilon(kappa=3.0, parts=16) == 24.0
    assert kappa_from_nominal(epsilon_v=24.0, parts=16) == 3.0
    assert vmf_step_epsilon(kappa=0.0, parts=5) == 0.0


def test_vmf_epsilon_fields():
    out = vmf_epsilon(kappa=0.5, parts=4, sample_rate=0.01, steps=1000, delta=1e-5)
    assert set(out) == {
        "epsilon",
        "delta",
        "epsilon_step",
        "epsilon_step_amplified",
        "epsilon_v_nominal",
        "epsilon_metric_step",
        "kappa",
        "parts",
        "sample_rate",
        "steps",
        "epsilon_pure_bound",
        "accounting",
    }
    assert out.pop("accounting") == "pure"  # no part dimensions: only the pure bound
    assert out["epsilon_pure_bound"] == out["epsilon"]
    assert out["epsilon_step"] == 4.0
    assert out["epsilon_v_nominal"] == 2.0
    assert out["epsilon_metric_step"] == 0.5
    assert out["epsilon_step_amplified"] == pytest.approx(math.log(1 + 0.01 * math.expm1(4.0)))
    assert out["epsilon"] == compose_pure_dp(
        epsilon=out["epsilon_step_amplified"], steps=1000, delta=1e-5
    )
    assert out["epsilon"] < 1000 * out["epsilon_step_amplified"]
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in out.values())


def test_vmf_zero_kappa_is_zero_epsilon():
    out = vmf_epsilon(kappa=0.0, parts=3, sample_rate=0.1, steps=100, delta=1e-5)
    assert out["epsilon"] == 0.0 and out["epsilon_step"] == 0.0


VMF_RUN = dict(
    kappa=st.floats(0.0, 50.0),
    parts=st.integers(1, 1000),
    q=st.floats(1e-4, 1.0),
    steps=st.integers(0, 4000),
    delta=st.floats(1e-10, 0.5),
)


@PROPERTY
@given(
    **VMF_RUN,
    more=st.integers(0, 4000),
    factor=st.floats(1.0, 3.0),
    qfactor=st.floats(0.0, 1.0),
    dfactor=st.floats(0.0, 1.0),
)
def test_vmf_epsilon_monotone(kappa, parts, q, steps, delta, more, factor, qfactor, dfactor):
    def eps(kappa=kappa, parts=parts, q=q, steps=steps, delta=delta):
        return vmf_epsilon(kappa=kappa, parts=parts, sample_rate=q, steps=steps, delta=delta)[
            "epsilon"
        ]

    base = eps()
    lo, hi = base * (1 - 1e-12), base * (1 + 1e-12)
    assert eps(steps=steps + more) >= lo  # non-decreasing in steps
    assert eps(kappa=kappa * factor) >= lo  # ... in κ
    assert eps(parts=parts + more) >= lo  # ... in the number of parts
    assert eps(q=q + (1 - q) * qfactor) >= lo  # ... in the sampling rate
    assert eps(delta=delta + (0.9 - delta) * dfactor) <= hi  # non-increasing in δ


@PROPERTY
@given(
    target=st.floats(0.05, 50.0),
    parts=st.integers(1, 1000),
    q=st.floats(1e-4, 1.0),
    steps=st.integers(1, 4000),
    delta=st.floats(1e-10, 0.1),
)
def test_vmf_kappa_for_epsilon_never_overshoots(target, parts, q, steps, delta):
    kw = dict(parts=parts, sample_rate=q, steps=steps, delta=delta)
    kappa = vmf_kappa_for_epsilon(target_epsilon=target, **kw)
    assert kappa > 0
    assert vmf_epsilon(kappa=kappa, **kw)["epsilon"] <= target
    # ... and is the largest such κ (to 1e-6 relative).
    assert vmf_epsilon(kappa=kappa * (1 + 1e-6), **kw)["epsilon"] > target


def test_sound_epsilon_is_far_above_nominal_with_many_parts():
    """Paper 1's ε_V = 2κ√m understates a step's pure ε 2κm by √m (here 10x)."""
    out = vmf_epsilon(kappa=1.0, parts=100, sample_rate=1.0, steps=1, delta=1e-9)
    assert out["epsilon_step"] == 10 * out["epsilon_v_nominal"]
    assert out["epsilon"] == pytest.approx(200.0, rel=1e-9)


# -- bad values ----------------------------------------------------------------------------------

GAUSS = dict(noise_multiplier=1.0, sample_rate=0.01, steps=100, delta=1e-5)
VMF = dict(kappa=1.0, parts=2, sample_rate=0.01, steps=100, delta=1e-5)
SOLVE = dict(sample_rate=0.01, steps=100, delta=1e-5)


@pytest.mark.parametrize(
    "func,base,name,bad",
    [
        (gaussian_epsilon, GAUSS, "noise_multiplier", -0.1),
        (gaussian_epsilon, GAUSS, "noise_multiplier", float("nan")),
        (gaussian_epsilon, GAUSS, "sample_rate", 0.0),
        (gaussian_epsilon, GAUSS, "sample_rate", 1.5),
        (gaussian_epsilon, GAUSS, "steps", -1),
        (gaussian_epsilon, GAUSS, "steps", 2.5),
        (gaussian_epsilon, GAUSS, "steps", True),
        (gaussian_epsilon, GAUSS, "delta", 0.0),
        (gaussian_epsilon, GAUSS, "delta", 1.0),
        (gaussian_epsilon, GAUSS, "delta", "1e-5"),
        (gaussian_epsilon, GAUSS, "accountant", "gdp"),
        (gaussian_noise_multiplier, dict(SOLVE, target_epsilon=1.0), "target_epsilon", 0.0),
        (gaussian_noise_multiplier, dict(SOLVE, target_epsilon=1.0), "target_epsilon", -2.0),
        (gaussian_noise_multiplier, dict(SOLVE, target_epsilon=1.0), "accountant", "RDP"),
        (vmf_epsilon, VMF, "kappa", -1.0),
        (vmf_epsilon, VMF, "kappa", math.inf),
        (vmf_epsilon, VMF, "parts", 0),
        (vmf_epsilon, VMF, "sample_rate", -0.5),
        (vmf_epsilon, VMF, "delta", 2.0),
        (vmf_epsilon, VMF, "steps", -5),
        (vmf_step_epsilon, dict(kappa=1.0, parts=1), "kappa", -1e-9),
        (vmf_nominal_epsilon, dict(kappa=1.0, parts=1), "parts", 0),
        (kappa_from_nominal, dict(epsilon_v=1.0, parts=1), "epsilon_v", 0.0),
        (amplify_without_replacement, dict(epsilon=1.0, sample_rate=0.1), "epsilon", -1.0),
        (amplify_without_replacement, dict(epsilon=1.0, sample_rate=0.1), "sample_rate", 0.0),
        (compose_pure_dp, dict(epsilon=1.0, steps=10, delta=1e-5), "epsilon", -1.0),
        (compose_pure_dp, dict(epsilon=1.0, steps=10, delta=1e-5), "steps", -1),
        (compose_pure_dp, dict(epsilon=1.0, steps=10, delta=1e-5), "delta", 0.0),
        (vmf_kappa_for_epsilon, dict(SOLVE, parts=1, target_epsilon=1.0), "target_epsilon", 0.0),
        (vmf_kappa_for_epsilon, dict(SOLVE, parts=1, target_epsilon=1.0), "parts", 0),
        (vmf_kappa_for_epsilon, dict(SOLVE, parts=1, target_epsilon=1.0), "steps", 0),
    ],
)
def test_bad_values_raise_privtool_error(func, base, name, bad):
    with pytest.raises(PrivtoolError) as info:
        func(**{**base, name: bad})
    message = str(info.value)
    assert name in message and "\n" not in message


def test_error_message_names_value_and_range():
    with pytest.raises(PrivtoolError, match=r"sample_rate=1\.5 .*\(0, 1\]"):
        gaussian_epsilon(noise_multiplier=1.0, sample_rate=1.5, steps=10, delta=1e-5)
    with pytest.raises(PrivtoolError, match=r"kappa=-1\.0"):
        vmf_epsilon(kappa=-1.0, parts=1, sample_rate=0.1, steps=10, delta=1e-5)
    with pytest.raises(PrivtoolError, match="rdp, prv"):
        gaussian_epsilon(
            noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=1e-5, accountant="moments"
        )


def test_numpy_scalars_are_accepted():
    res = gaussian_epsilon(
        noise_multiplier=np.float32(1.5),
        sample_rate=np.float64(0.04),
        steps=np.int64(2250),
        delta=1e-5,
    )
    assert res.epsilon == pytest.approx(7.329111, abs=1e-4)
    assert (
        vmf_epsilon(
            kappa=np.float64(1.0),
            parts=np.int32(2),
            sample_rate=0.1,
            steps=np.int64(10),
            delta=1e-5,
        )["parts"]
        == 2
    )
