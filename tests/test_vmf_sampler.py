"""Tests for the batched von Mises–Fisher sampler and A_d(κ) (SPEC §5, paper 1 §3.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import ive

from privtool.mechanisms.vmf_sampler import mean_resultant_length, sample_vmf

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _random_unit(d: int, seed: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    v = torch.randn(d, dtype=torch.float64, generator=_gen(seed))
    return (v / v.norm()).to(dtype=dtype, device=device)


def _vmf_variance(d: int, kappa: float) -> float:
    """Var⟨x, μ⟩ = 1 - A² - (d-1)A/κ for x ~ VMF(κ, μ) on S^(d-1)."""
    a = mean_resultant_length(d, kappa)
    return 1.0 - a * a - (d - 1) * a / kappa


def _amos_bounds(d: int, kappa: float) -> tuple[float, float]:
    """Amos (1974) bounds on I_ν(x)/I_{ν-1}(x), ν = d/2."""
    nu = d / 2
    lo = kappa / (nu - 0.5 + math.sqrt((nu + 0.5) ** 2 + kappa**2))
    hi = kappa / (nu - 0.5 + math.sqrt((nu - 0.5) ** 2 + kappa**2))
    return lo, hi


# ----------------------------------------------------------------- distribution at small d


@pytest.mark.parametrize("d", [2, 3, 5, 10, 50])
@pytest.mark.parametrize("kappa", [0.5, 5.0, 50.0])
def test_cosine_matches_scipy_vonmises_fisher(d, kappa):
    n = 3000
    mu = _random_unit(d, seed=d)
    x = sample_vmf(mu.expand(n, d), kappa, generator=_gen(1000 * d + int(kappa * 10)))
    ours = (x @ mu).numpy()
    ref_samples = stats.vonmises_fisher(mu.numpy(), kappa).rvs(
        n, random_state=np.random.default_rng(7 * d + int(kappa))
    )
    theirs = ref_samples @ mu.numpy()
    p = stats.ks_2samp(ours, theirs).pvalue
    assert p > 1e-3, (d, kappa, p)
    # and the mean cosine is A_d(κ)
    se = ours.std() / math.sqrt(n)
    assert abs(ours.mean() - mean_resultant_length(d, kappa)) < 5 * se


@pytest.mark.parametrize("d", [3, 10, 1000])
def test_kappa_zero_is_uniform_on_sphere(d):
    n = 4000
    mu = _random_unit(d, seed=3)
    x = sample_vmf(mu.expand(n, d), 0.0, generator=_gen(11))
    # the cosine to any fixed unit vector is distributed as 2·Beta((d-1)/2, (d-1)/2) - 1
    for v in (mu, _random_unit(d, seed=4)):
        w = (x @ v).numpy()
        p = stats.kstest((w + 1) / 2, stats.beta((d - 1) / 2, (d - 1) / 2).cdf).pvalue
        assert p > 1e-3, (d, p)


def test_d2_is_von_mises_on_the_circle():
    # on S^1, VMF(κ, μ) is the von Mises distribution of the angle to μ
    n, kappa = 4000, 3.0
    mu = torch.tensor([0.6, -0.8], dtype=torch.float64)
    x = sample_vmf(mu.expand(n, 2), kappa, generator=_gen(5))
    angle = np.arctan2(x[:, 1].numpy(), x[:, 0].numpy()) - math.atan2(-0.8, 0.6)
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    assert stats.kstest(angle, stats.vonmises(kappa).cdf).pvalue > 1e-3


# ----------------------------------------------------------------- tangent part and mean direction


@pytest.mark.parametrize("where", ["random", "e1", "-e1", "near-e1", "near--e1"])
def test_tangent_isotropic_and_mean_direction(where):
    d, n, kappa = 6, 20000, 4.0
    if where == "random":
        mu = _random_unit(d, seed=21)
    else:
        mu = torch.zeros(d, dtype=torch.float64)
        mu[0] = -1.0 if "-e1" in where else 1.0
        if where.startswith("near"):
            mu[1:] = 1e-9 * torch.arange(1, d, dtype=torch.float64)
            mu /= mu.norm()
    x = sample_vmf(mu.expand(n, d), kappa, generator=_gen(22))
    a = mean_resultant_length(d, kappa)
    # mean direction: E[x] = A_d(κ)·μ
    mean = x.mean(0)
    sd = math.sqrt(1.0 / n)
    assert torch.allclose(mean, a * mu, atol=5 * sd), (mean, a * mu)
    # tangent part: an orthonormal basis of μ^⊥
    basis = torch.linalg.qr(
        torch.cat([mu[:, None], torch.randn(d, d - 1, dtype=torch.float64, generator=_gen(23))], 1)
    )[0][:, 1:]
    tang = x @ basis  # (n, d-1) coordinates of the tangent component
    # zero mean, isotropic covariance (1 - E[w²]) / (d - 1) · I
    w = x @ mu
    expect_var = float((1 - (w * w).mean()) / (d - 1))
    assert tang.mean(0).abs().max() < 5 * math.sqrt(expect_var / n)
    cov = tang.T @ tang / n
    assert torch.allclose(
        cov,
        expect_var * torch.eye(d - 1, dtype=torch.float64),
        atol=6 * expect_var * math.sqrt(2.0 / n),
    )
    # the tangent direction is uniform on S^(d-2): its first coordinate ~ 2·Beta(...) - 1
    u = tang / tang.norm(dim=1, keepdim=True)
    p = stats.kstest((u[:, 0].numpy() + 1) / 2, stats.beta((d - 2) / 2, (d - 2) / 2).cdf).pvalue
    assert p > 1e-3


# ----------------------------------------------------------------- large d, A_d(κ)


@pytest.mark.parametrize("kappa", [1.0, 1e3, 1e5])
def test_large_d_mean_and_variance_of_cosine(kappa):
    d, n = 100_000, 200
    mu = torch.randn(n, d, generator=_gen(31), dtype=torch.float64)
    mu = (mu / mu.norm(dim=1, keepdim=True)).float()  # a different direction per row
    x = sample_vmf(mu, kappa, generator=_gen(32))
    assert x.dtype == torch.float32
    cos = (x.double() * mu.double()).sum(1)
    a = mean_resultant_length(d, kappa)
    var = _vmf_variance(d, kappa)
    assert abs(cos.mean().item() - a) < 4 * math.sqrt(var / n), (cos.mean().item(), a)
    # sample variance close to the exact variance (about ±4 standard errors at n = 200)
    assert 0.6 < cos.var().item() / var < 1.45
    norms = x.double().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=2e-6)


@pytest.mark.parametrize("d", [2, 3, 4, 7, 10, 33, 100, 150, 200, 201, 202, 203, 400])
@pytest.mark.parametrize("kappa", [1e-3, 0.1, 1.0, 7.5, 60.0, 1e3, 1e5])
def test_mean_resultant_length_matches_ive_ratio(d, kappa):
    num, den = ive(d / 2, kappa), ive(d / 2 - 1, kappa)
    if den > 1e-280 and num > 1e-280:
        assert mean_resultant_length(d, kappa) == pytest.approx(num / den, rel=1e-11)
    else:  # ive underflows (κ ≪ d): Gauss' continued fraction, 8 levels, converges at once
        assert kappa < d / 10
        nu, tail = d / 2, 0.0
        for k in range(8, -1, -1):
            tail = kappa / (2 * (nu + k) + kappa * tail)  # R_{ν+k} = x / (2(ν+k) + x R_{ν+k+1})
        assert mean_resultant_length(d, kappa) == pytest.approx(tail, rel=1e-11)


@pytest.mark.parametrize("d", [2, 10, 1000, 100_000, 10**6, 10**8])
@pytest.mark.parametrize("kappa", [1e-3, 1.0, 1e2, 1e4, 1e5, 1e6, 1e7])
def test_mean_resultant_length_within_amos_bounds(d, kappa):
    a = mean_resultant_length(d, kappa)
    lo, hi = _amos_bounds(d, kappa)
    assert lo * (1 - 1e-12) <= a <= hi * (1 + 1e-12)
    assert 0.0 < a < 1.0


@pytest.mark.parametrize("d", [3, 1000, 100_000, 10**8])
def test_mean_resultant_length_small_kappa_asymptotics(d):
    for kappa in (1e-3, 1e-2):
        # A_d(κ) = κ/d · (1 - κ²/(d(d+2)) + O(κ⁴))
        assert mean_resultant_length(d, kappa) == pytest.approx(
            kappa / d * (1 - kappa**2 / (d * (d + 2))), rel=1e-9
        )
    assert mean_resultant_length(d, 0.0) == 0.0


@pytest.mark.parametrize("d", [2, 3, 10, 1000, 100_000])
def test_mean_resultant_length_large_kappa_asymptotics(d):
    for kappa in (1e6 * d, 1e7 * d):
        # A_d(κ) = 1 - (d-1)/(2κ) + (d-1)(d-3)/(8κ²) + O(κ⁻³)
        expect = 1 - (d - 1) / (2 * kappa) + (d - 1) * (d - 3) / (8 * kappa**2)
        assert abs(mean_resultant_length(d, kappa) - expect) < 1e-13
    assert abs(mean_resultant_length(10, 1e7) - (1 - 9 / 2e7)) < 1e-12


def test_mean_resultant_length_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    for d, kappa in [(1000, 500.0), (1000, 3.0), (5000, 2e4), (250, 1e-3), (20_000, 2e3)]:
        nu = mpmath.mpf(d) / 2
        ref = mpmath.besseli(nu, kappa, maxterms=10**6) / mpmath.besseli(
            nu - 1, kappa, maxterms=10**6
        )
        assert mean_resultant_length(d, kappa) == pytest.approx(float(ref), rel=1e-12)


def test_mean_resultant_length_monotone_in_kappa_and_d():
    ks = np.logspace(-3, 7, 60)
    for d in (2, 50, 201, 202, 10**5, 10**8):
        a = [mean_resultant_length(d, k) for k in ks]
        assert all(x < y for x, y in zip(a, a[1:])), d
    for k in (0.1, 10.0, 1e4):
        a = [mean_resultant_length(d, k) for d in (2, 3, 10, 200, 202, 1000, 10**6)]
        assert all(x > y for x, y in zip(a, a[1:])), k


# ----------------------------------------------------------------- numerics: norms, extremes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 3e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize("d", [2, 3, 1000])
@pytest.mark.parametrize("where", ["random", "e1", "-e1"])
def test_unit_norm_and_finite(device, dtype, tol, d, where):
    n = 64
    if where == "random":
        mu = torch.randn(n, d, dtype=torch.float64, generator=_gen(41))
        mu = mu / mu.norm(dim=1, keepdim=True)
    else:
        mu = torch.zeros(n, d, dtype=torch.float64)
        mu[:, 0] = 1.0 if where == "e1" else -1.0
    mu = mu.to(dtype=dtype, device=device)
    for kappa in (0.0, 1e-3, 1.0, 1e3, 1e7):
        x = sample_vmf(mu, kappa, generator=_gen(42, device))
        assert x.shape == mu.shape and x.dtype == dtype and x.device == mu.device
        assert torch.isfinite(x).all()
        norms = x.double().norm(dim=1)
        assert (norms - 1).abs().max().item() < tol, (kappa, (norms - 1).abs().max().item())
        cos = (x.double() * mu.double()).sum(1)
        if kappa == 1e7:  # concentrated: 1 - cos ≈ (d-1)/(2κ) on average
            assert (1 - cos).max().item() < 50 * d / kappa + 10 * tol


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    mu = torch.randn(32, 500, dtype=torch.float64, generator=_gen(45))
    mu = (mu / mu.norm(dim=1, keepdim=True)).to(dtype)
    x = sample_vmf(mu, 300.0, generator=_gen(46))
    assert x.dtype == dtype and torch.isfinite(x).all()
    assert torch.allclose(x.float().norm(dim=1), torch.ones(32), atol=1e-2)
    cos = (x.double() * mu.double()).sum(1)
    assert abs(cos.mean().item() - mean_resultant_length(500, 300.0)) < 0.03


def test_concentrated_matches_theory_float64():
    # κ = 1e7, d = 3: 1 - w ~ Exponential(mean 1/κ) to first order; check mean of 1 - w
    n, d, kappa = 4000, 3, 1e7
    mu = _random_unit(d, seed=51)
    x = sample_vmf(mu.expand(n, d), kappa, generator=_gen(52))
    one_minus_w = 1 - (x @ mu)
    m = one_minus_w.mean().item()
    expect = 1 - mean_resultant_length(d, kappa)
    assert abs(m - expect) < 5 * expect / math.sqrt(n)


@pytest.mark.parametrize("kappa", [1e-3, 1e7])
def test_huge_dimension_single_row(kappa):
    d = 20_000_000
    mu = torch.zeros(1, d)
    mu[0, 0] = 0.6
    mu[0, d - 1] = -0.8
    x = sample_vmf(mu, kappa, generator=_gen(61))
    assert torch.isfinite(x).all()
    assert abs(x.double().norm().item() - 1) < 1e-5
    cos = (x.double() * mu.double()).sum().item()
    a = mean_resultant_length(d, kappa)
    sd = math.sqrt(_vmf_variance(d, kappa))
    assert abs(cos - a) < 6 * sd, (cos, a, sd)


@pytest.mark.slow
@pytest.mark.parametrize("kappa", [1e-3, 1e4, 1e7])
def test_d_1e8_single_row(kappa):
    d = 10**8
    mu = torch.zeros(1, d)
    mu[0, 123] = 1.0
    x = sample_vmf(mu, kappa, generator=_gen(71))
    assert torch.isfinite(x).all()
    assert abs(x.double().norm().item() - 1) < 1e-5
    a = mean_resultant_length(d, kappa)
    sd = math.sqrt(_vmf_variance(d, kappa))
    assert abs(x[0, 123].item() - a) < 6 * sd + 1e-6


def test_scalar_sampler_extremes_float64():
    # the w-sampler alone, at the extremes of the brief: d up to 1e8, κ from 1e-3 to 1e7
    from privtool.mechanisms.vmf_sampler import _sample_one_minus_w

    dev, n = torch.device("cpu"), 20000
    for d in (2, 3, 1000, 10**8):
        for kappa in (0.0, 1e-3, 1.0, 1e4, 1e7):
            t = _sample_one_minus_w(n, d, kappa, _gen(81), dev)
            assert torch.isfinite(t).all() and (t >= 0).all() and (t <= 2).all()
            mean_w = 1 - t.mean().item()
            a = mean_resultant_length(d, kappa) if kappa > 0 else 0.0
            sd = math.sqrt(_vmf_variance(d, kappa)) if kappa > 0 else math.sqrt(1 / d)
            assert abs(mean_w - a) < 5 * sd / math.sqrt(n) + 1e-15, (d, kappa, mean_w, a)
            if kappa > 0:
                var = t.var().item()
                assert 0.85 < var / _vmf_variance(d, kappa) < 1.15, (d, kappa)


@pytest.mark.parametrize(
    "d,kappa",
    [
        (3, 1e7),
        (4, 1e-3),
        (1000, 500.0),
        (100_000, 1e3),
        (100_000, 1e7),
        (10**8, 1e-3),
        (10**8, 1e7),
    ],
)
def test_scalar_sampler_matches_exact_marginal(d, kappa):
    """KS test of t = 1 - w against the exact density ∝ exp(-κt) (t(2-t))^((d-3)/2), integrated
    numerically around its bulk — checks Wood's sampler where scipy's cannot go."""
    from privtool.mechanisms.vmf_sampler import _sample_one_minus_w

    n = 5000
    t = _sample_one_minus_w(n, d, kappa, _gen(99), torch.device("cpu")).numpy()
    mean_t = 1 - mean_resultant_length(d, kappa)
    sd = math.sqrt(_vmf_variance(d, kappa))
    grid = np.linspace(max(0.0, mean_t - 15 * sd), min(2.0, mean_t + 15 * sd), 200_001)
    grid = grid[(grid > 0) & (grid < 2)]
    logpdf = -kappa * grid + 0.5 * (d - 3) * (np.log(grid) + np.log(2 - grid))
    pdf = np.exp(logpdf - logpdf.max())
    cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(grid))])
    cdf /= cdf[-1]
    p = stats.kstest(t, lambda q: np.interp(q, grid, cdf)).pvalue
    assert p > 1e-3, p


def test_non_contiguous_mu_and_global_rng_untouched():
    base = torch.randn(300, 40, dtype=torch.float64, generator=_gen(97))
    mu = base.T  # (40, 300), column-major view
    mu = mu / mu.norm(dim=1, keepdim=True)
    mu_nc = torch.empty(300, 40, dtype=torch.float64).T
    mu_nc.copy_(mu)
    assert not mu_nc.is_contiguous()
    state = torch.get_rng_state()
    a = sample_vmf(mu_nc, 30.0, generator=_gen(98))
    assert torch.equal(torch.get_rng_state(), state)  # only the given generator is used
    b = sample_vmf(mu_nc.contiguous(), 30.0, generator=_gen(98))
    assert torch.allclose(a, b, rtol=0, atol=1e-14)
    assert torch.allclose(a.norm(dim=1), torch.ones(40, dtype=torch.float64), atol=1e-13)


# ----------------------------------------------------------------- determinism and errors


def test_deterministic_given_seed():
    mu = torch.randn(40, 3000, generator=_gen(91))
    mu = mu / mu.norm(dim=1, keepdim=True)
    a = sample_vmf(mu, 50.0, generator=_gen(92))
    b = sample_vmf(mu, 50.0, generator=_gen(92))
    c = sample_vmf(mu, 50.0, generator=_gen(93))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(0)
    d1 = sample_vmf(mu, 50.0)
    torch.manual_seed(0)
    d2 = sample_vmf(mu, 50.0)
    assert torch.equal(d1, d2)


def test_one_dimensional_mu_and_empty_batch():
    mu = _random_unit(7, seed=95)
    x = sample_vmf(mu, 2.0, generator=_gen(96))
    assert x.shape == (7,) and abs(x.norm().item() - 1) < 1e-12
    assert sample_vmf(torch.zeros(0, 5), 1.0).shape == (0, 5)


@pytest.mark.parametrize("bad_kappa", [-1e-9, -1.0, float("nan"), float("inf")])
def test_bad_kappa_raises(bad_kappa):
    mu = torch.tensor([[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError):
        sample_vmf(mu, bad_kappa)
    with pytest.raises(ValueError):
        mean_resultant_length(3, bad_kappa)


def test_bad_dimension_raises():
    with pytest.raises(ValueError):
        sample_vmf(torch.ones(4, 1), 1.0)
    with pytest.raises(ValueError):
        sample_vmf(torch.ones(2, 3, 4), 1.0)
    with pytest.raises(ValueError):
        sample_vmf(torch.ones(4, 3, dtype=torch.int64), 1.0)
    for d in (1, 0, 2.5):
        with pytest.raises(ValueError):
            mean_resultant_length(d, 1.0)
