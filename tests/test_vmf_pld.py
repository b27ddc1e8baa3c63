"""The tight VMF accountant (privtool.accounting.vmf_pld) against independent references.

Every reference below is written here from the definitions (the VMF density of t = xᵀy, the
hockey-stick divergence, μ-GDP's closed form, scipy's own VMF sampler), not from the module."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, signal
from scipy.optimize import brentq
from scipy.special import ndtr
from typer.testing import CliRunner

from privtool.accounting import vmf_epsilon, vmf_solve_kappa
from privtool.accounting.vmf_pld import (
    format_part_dims,
    parse_part_dims,
    pld_delta,
    pld_epsilon,
)
from privtool.accounting.vmf_step_pld import part_pld
from privtool.cli import app
from privtool.errors import PrivtoolError

DELTA = 1e-5


# -- independent references ------------------------------------------------------------------------


def t_density(kappa: float, dim: int):
    """Normalised density of t = xᵀy under VMF(κ, x) on S^{d−1}: ∝ e^{κ(t−1)}(1 − t²)^{(d−3)/2}."""

    def f(t):
        return np.exp(kappa * (t - 1.0)) * (1.0 - t * t) ** ((dim - 3) / 2)

    z = integrate.quad(f, -1, 1, limit=200)[0]
    return lambda t: f(t) / z


def hockey_stick(losses: np.ndarray, probs: np.ndarray, eps: float) -> float:
    """δ(ε) = Σ p (1 − e^{ε − L})₊ (loss L under the first distribution)."""
    keep = losses > eps
    return float(np.sum(probs[keep] * -np.expm1(eps - losses[keep])))


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε of μ-GDP at δ (Dong, Roth & Su 2019, Cor. 2.13)."""

    def d(eps):
        return ndtr(-eps / mu + mu / 2) - math.exp(eps) * ndtr(-eps / mu - mu / 2) - delta

    return brentq(d, 0.0, 100.0)


def convolved_losses(kappa: float, dim: int, k: int, n: int = 4000):
    """Loss grid and PMF of the sum of k independent one-part losses 2κt (t on a midpoint grid
    of n cells in [−1, 1]), by repeated FFT convolution."""
    dt = 2.0 / n
    t = -1.0 + dt * (np.arange(n) + 0.5)
    p = np.exp(kappa * (t - 1.0)) * (1.0 - t * t) ** ((dim - 3) / 2)
    p /= p.sum()
    out = p
    for _ in range(k - 1):
        out = np.maximum(signal.fftconvolve(out, p), 0.0)
    losses = 2.0 * kappa * (k * t[0] + dt * np.arange(len(out)))
    return losses, out / out.sum()


# -- 1. one part: density, d = 1..3, the 2κ limit, dominance of the antipodal pair ----------------


@pytest.mark.parametrize("dim,kappa", [(2, 0.1), (3, 2.0), (5, 30.0), (50, 1.0), (300, 0.07)])
def test_one_part_pld_brackets_quadrature(dim, kappa):
    f = t_density(kappa, dim)
    h = 1e-3 * 2 * kappa
    up, down = part_pld(kappa, dim, h, True), part_pld(kappa, dim, h, False)

    def exact(eps):
        return integrate.quad(
            lambda t: f(t) * -np.expm1(eps - 2 * kappa * t), eps / (2 * kappa), 1, limit=200
        )[0]

    for frac in (0.0, 0.2, 0.5, 0.9):
        eps = frac * 2 * kappa
        assert (
            down.get_delta_for_epsilon(eps) - 1e-12
            <= exact(eps)
            <= up.get_delta_for_epsilon(eps) + 1e-12
        )
        # each loss moved by at most one grid step h: δ_up(ε) ≤ δ(ε − h), δ_down(ε) ≥ δ(ε + h)
        assert up.get_delta_for_epsilon(eps) <= exact(eps - h) * (1 + 1e-9) + 1e-13
        assert down.get_delta_for_epsilon(eps) >= exact(eps + h) * (1 - 1e-9) - 1e-13


@pytest.mark.parametrize("dim", [1, 2, 3, 20])
def test_one_part_delta_to_zero_gives_two_kappa(dim):
    kappa = 0.8
    eps = pld_epsilon(kappa=kappa, part_dims=[dim], sample_rate=1.0, steps=1, delta=1e-13, h=1e-4)
    assert eps["epsilon_pld"] <= 2 * kappa + 1e-4
    assert eps["epsilon_pld"] > (0.999 if dim == 1 else 0.9) * 2 * kappa
    # ε(δ) rises towards 2κ as δ falls
    looser = pld_epsilon(kappa=kappa, part_dims=[dim], sample_rate=1.0, steps=1, delta=1e-3, h=1e-4)
    assert looser["epsilon_pld"] <= eps["epsilon_pld"]


@pytest.mark.parametrize("kappa", [1e-4, 1e-2, 10.0, 1e3, 1e6])
@pytest.mark.parametrize("dim", [1, 2, 3, 784])
def test_extreme_kappa_and_small_d_do_not_overflow(kappa, dim):
    out = vmf_epsilon(
        kappa=kappa, parts=2, part_dims=[dim, dim], sample_rate=0.1, steps=5, delta=DELTA
    )
    assert out["accounting"] in ("pld", "pure")
    assert math.isfinite(out["epsilon"]) and 0 <= out["epsilon"] <= out["epsilon_pure_bound"]


def _delta_at_angle(kappa, dim, theta, eps, n=500):
    """δ_θ(ε) = E_{y∼VMF(x)}(1 − e^{ε − κ(x − x')ᵀy})₊ for ∠(x, x') = θ, by 2-D quadrature over
    t = y₁ = cos φ and w = the coordinate of y's unit remainder along x'⊥: with x = e₁,
    x' = (cos θ, sin θ, 0, …), (x − x')ᵀy = (1 − cos θ) t − sin θ √(1 − t²) w."""
    phi = (np.arange(n) + 0.5) * math.pi / n
    wphi = np.exp(kappa * (np.cos(phi) - 1)) * np.sin(phi) ** (dim - 2)
    wphi /= wphi.sum()
    if dim == 2:
        w, ww = np.array([-1.0, 1.0]), np.array([0.5, 0.5])
    else:
        psi = (np.arange(n) + 0.5) * math.pi / n
        w, ww = np.cos(psi), np.sin(psi) ** (dim - 3)
        ww = ww / ww.sum()
    t = np.cos(phi)[:, None]
    loss = kappa * ((1 - math.cos(theta)) * t - math.sin(theta) * np.sqrt(1 - t * t) * w[None, :])
    val = np.where(loss > eps, -np.expm1(np.minimum(eps - loss, 0.0)), 0.0)
    return float(wphi @ val @ ww)


@pytest.mark.parametrize("dim", [2, 3, 5, 20, 100])
@pytest.mark.parametrize("kappa", [0.05, 0.5, 5.0, 50.0])
def test_antipodal_pair_dominates_every_angle(dim, kappa):
    """Numerical verification kept as a test (module docstring, 'Dominance')."""
    for frac in (0.0, 0.1, 0.3, 0.6):
        eps = frac * 2 * kappa
        worst = _delta_at_angle(kappa, dim, math.pi, eps)
        for theta in np.linspace(0.15, math.pi * 0.97, 9):
            assert _delta_at_angle(kappa, dim, theta, eps) <= worst * (1 + 1e-6) + 1e-12, (
                theta,
                eps,
            )


# -- 2/4. composition at q = 1 against an exact convolution; large-d GDP limit ---------------------


@pytest.mark.parametrize(
    "dim,kappa,parts,steps", [(3, 0.3, 5, 6), (10, 0.5, 10, 4), (40, 1.0, 3, 10)]
)
def test_q1_matches_exact_convolution(dim, kappa, parts, steps):
    losses, probs = convolved_losses(kappa, dim, parts * steps)
    lo, hi = 0.0, float(losses[-1])
    eps_ref = brentq(lambda e: hockey_stick(losses, probs, e) - DELTA, lo, hi, xtol=1e-10)
    out = pld_epsilon(
        kappa=kappa, part_dims=[dim] * parts, sample_rate=1.0, steps=steps, delta=DELTA
    )
    assert out["epsilon_pld_optimistic"] <= eps_ref * (1 + 1e-3)
    assert eps_ref * (1 - 1e-3) <= out["epsilon_pld"] <= eps_ref * 1.02
    eps, h, k = 0.5 * eps_ref, out["pld_grid"], parts * steps
    d_up = pld_delta(
        kappa=kappa, part_dims=[dim] * parts, sample_rate=1.0, steps=steps, epsilon=eps, h=h
    )
    # each of the K losses rounded up by at most h: δ(ε) ≤ δ_up(ε) ≤ δ(ε − K·h)
    assert hockey_stick(losses, probs, eps) * (1 - 1e-3) <= d_up
    assert d_up <= hockey_stick(losses, probs, eps - k * h) * (1 + 1e-3)


def test_large_d_matches_gaussian_dp():
    dim, parts, steps, mu = 20000, 10, 20, 1.0
    kappa = mu / 2 * math.sqrt(dim / (parts * steps))  # μ = 2κ√(K/d)
    out = pld_epsilon(
        kappa=kappa, part_dims=[dim] * parts, sample_rate=1.0, steps=steps, delta=DELTA
    )
    assert out["epsilon_pld"] == pytest.approx(gdp_epsilon(mu, DELTA), rel=0.03)


@pytest.mark.slow
def test_issue_example_q1():
    """Issue 15's 'done when' (a few seconds: K = 4800 compositions on a grid of ~4e-6)."""
    q1 = vmf_epsilon(
        kappa=0.0707, parts=50, part_dims=[300] * 50, sample_rate=1.0, steps=96, delta=DELTA
    )
    assert 2.286 <= q1["epsilon"] <= 2.36
    assert q1["epsilon_pure_bound"] == pytest.approx(678.7, abs=0.05)
    assert q1["epsilon_pld_optimistic"] <= 2.290


def test_issue_example_sampled():
    sampled = vmf_epsilon(
        kappa=0.0707, parts=50, part_dims=[300] * 50, sample_rate=0.05, steps=96, delta=DELTA
    )
    assert 0.087 <= sampled["epsilon"] <= 0.093
    assert sampled["epsilon_pure_bound"] == pytest.approx(392.7, abs=0.05)


# -- 3. sampling: Monte Carlo of the mechanism itself stays below the accountant ------------------


@pytest.mark.parametrize("q,other", [(1.0, None), (0.25, "x"), (0.25, "x'"), (0.25, "orth")])
def test_monte_carlo_delta_below_accountant(q, other):
    """Batch size 1 from n = 1/q records (fixed size, without replacement): D = {x, z, …, z},
    D' = {x', z, …, z}; one step outputs y ∼ VMF(κ, record drawn). Its exact loss is
    log[(q p_x(y) + (1 − q) p_z(y)) / (q p_x'(y) + (1 − q) p_z(y))]; δ(ε) of T steps is the
    mean of (1 − e^{ε − ΣL})₊ over draws under D, scipy's VMF sampler (independent of privtool)."""
    from scipy.stats import vonmises_fisher

    rng = np.random.default_rng(0)
    dim, kappa, steps, n_mc = 3, 1.5, 4, 100_000
    x = np.eye(dim)[0]
    xp = -x
    z = {"x": x, "x'": xp, "orth": np.eye(dim)[1], None: x}[other]
    log_c = 0.0  # the normaliser cancels in every ratio

    def log_p(mean, y):
        return log_c + kappa * y @ mean

    total = np.zeros(n_mc)
    for _ in range(steps):
        pick = rng.random(n_mc) < q
        y = np.where(
            pick[:, None],
            vonmises_fisher(x, kappa).rvs(n_mc, random_state=rng),
            vonmises_fisher(z, kappa).rvs(n_mc, random_state=rng),
        )
        num = (
            np.logaddexp(math.log(q) + log_p(x, y), math.log1p(-q) + log_p(z, y))
            if q < 1
            else log_p(x, y)
        )
        den = (
            np.logaddexp(math.log(q) + log_p(xp, y), math.log1p(-q) + log_p(z, y))
            if q < 1
            else log_p(xp, y)
        )
        total += num - den
    out = pld_epsilon(kappa=kappa, part_dims=[dim], sample_rate=q, steps=steps, delta=DELTA)
    for eps in (0.25 * out["epsilon_pld"], 0.5 * out["epsilon_pld"], out["epsilon_pld"] * 0.8):
        vals = np.where(total > eps, -np.expm1(np.minimum(eps - total, 0)), 0.0)
        mc, se = vals.mean(), vals.std() / math.sqrt(n_mc)
        acc = pld_delta(
            kappa=kappa, part_dims=[dim], sample_rate=q, steps=steps, epsilon=eps, h=out["pld_grid"]
        )
        assert mc <= acc + 4 * se + 1e-12, (eps, mc, se, acc)


# -- tight ≤ pure; monotone in every argument ------------------------------------------------------


@pytest.mark.parametrize(
    "kappa,dims,q,steps,delta",
    [
        (0.05, [30] * 4, 0.1, 50, 1e-5),
        (1.0, [2, 3, 5], 0.5, 10, 1e-6),
        (3.0, [1], 1.0, 3, 1e-3),
        (20.0, [100] * 2, 0.02, 30, 1e-5),
        (0.2, [784, 10], 1.0, 40, 1e-8),
    ],
)
def test_tight_never_above_pure_bound(kappa, dims, q, steps, delta):
    out = vmf_epsilon(
        kappa=kappa, parts=len(dims), part_dims=dims, sample_rate=q, steps=steps, delta=delta
    )
    assert out["accounting"] == "pld"
    assert out["epsilon"] <= out["epsilon_pure_bound"]
    slack = len(dims) * steps * out["pld_grid"]  # the rounding-up grid's own allowance
    assert out["epsilon_pld"] <= out["epsilon_pure_bound"] + slack


def test_monotone_in_kappa_steps_q_dimension_delta():
    base = {"kappa": 0.3, "part_dims": [50] * 4, "sample_rate": 0.2, "steps": 20, "delta": 1e-5}
    h = 1e-4

    def eps(**kw):
        return pld_epsilon(**{**base, **kw}, h=h, optimistic=False)["epsilon_pld"]

    e0 = eps()
    assert eps(kappa=0.4) > e0
    assert eps(steps=30) > e0
    assert eps(sample_rate=0.3) > e0
    assert eps(part_dims=[100] * 4) < e0
    assert eps(delta=1e-3) < e0


# -- 5. round trip of the κ solve ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "target,dims,q,steps", [(1.0, [20] * 10, 0.1, 50), (8.0, [25] * 6 + [150] * 4, 0.05, 100)]
)
def test_epsilon_target_round_trip(target, dims, q, steps):
    kappa, grid = vmf_solve_kappa(
        target_epsilon=target,
        parts=len(dims),
        part_dims=dims,
        sample_rate=q,
        steps=steps,
        delta=DELTA,
    )
    kw = {
        "parts": len(dims),
        "part_dims": dims,
        "sample_rate": q,
        "steps": steps,
        "delta": DELTA,
        "pld_grid": grid,
    }
    got = vmf_epsilon(kappa=kappa, **kw)["epsilon"]
    assert 0.99 * target <= got <= target
    assert vmf_epsilon(kappa=kappa * 1.01, **kw)["epsilon"] > target
    pure = vmf_epsilon(kappa=kappa, parts=len(dims), sample_rate=q, steps=steps, delta=DELTA)
    assert pure["epsilon"] > got  # the pure bound would have charged more for the same κ


# -- parsing and the CLI -----------------------------------------------------------------------------


def test_part_dims_parse_and_format():
    assert parse_part_dims("25*2, 150,256*3") == [25, 25, 150, 256, 256, 256]
    assert format_part_dims([25, 25, 150, 256, 256, 256]) == "25*2,150,256*3"
    for bad in ("", "3*x", "0*2", "5*0", "-3"):
        with pytest.raises(PrivtoolError, match="not allowed"):
            parse_part_dims(bad)


def _cli(*args):
    return CliRunner().invoke(app, ["epsilon", "--mech", "vmf", *args])


def test_cli_epsilon_part_dims_and_parts_alone():
    res = _cli(
        "--kappa",
        "0.0707",
        "--part-dims",
        "300*50",
        "--sample-rate",
        "0.05",
        "--steps",
        "96",
        "--json",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["accounting"] == "pld" and out["parts"] == 50 and out["part_dims"] == "300*50"
    assert 0.087 <= out["epsilon"] <= 0.093 and out["epsilon_pure_bound"] > 390
    res = _cli(
        "--kappa", "0.0707", "--parts", "50", "--sample-rate", "1", "--steps", "96", "--json"
    )
    out = json.loads(res.stdout)
    assert out["accounting"] == "pure" and "only the pure bound" in out["note"]
    assert out["epsilon"] == pytest.approx(678.7, abs=0.05)


@pytest.mark.slow
def test_cli_epsilon_model_partition():
    res = _cli(
        "--kappa",
        "0.0707",
        "--model",
        "lenet",
        "--partition",
        "row",
        "--sample-rate",
        "0.05",
        "--steps",
        "10",
        "--json",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["parts"] == 50 and sorted(parse_part_dims(out["part_dims"])) == sorted(
        [10] + [12] * 3 + [25] * 12 + [300] * 24 + [588] * 10
    )


@pytest.mark.parametrize(
    "args,match",
    [
        (["--part-dims", "3*x"], "not allowed"),
        (["--part-dims", "300*5", "--parts", "4"], "does not match"),
        (["--part-dims", "300", "--model", "lenet"], "not both"),
        (["--partition", "row"], "need --model"),
        (["--model", "lenet", "--partition", "rows"], "not allowed"),
    ],
)
def test_cli_epsilon_bad_vmf_dimensions_are_one_line_errors(args, match):
    res = _cli("--kappa", "0.1", "--sample-rate", "0.1", "--steps", "5", *args)
    assert res.exit_code == 1
    assert match in res.output and "Traceback" not in res.output
