"""Batched von Mises–Fisher sampling at model size, and the mean resultant length A_d(κ).

VMF(κ, μ) on the unit sphere S^{d-1} ⊂ R^d has density C_d(κ) exp(κ μᵀx). Following Ulrich
(1984) and Wood (1994) ("Simulation of the von Mises Fisher distribution", Communications in
Statistics – Simulation and Computation 23(1):157–164), a sample is

    x = w μ + sqrt(1 - w²) v,

where the scalar w = ⟨x, μ⟩ is drawn by Wood's rejection sampler and v is a uniformly random unit
vector orthogonal to μ. Here:

* w is drawn for all N rows at once, in float64, with every quantity written in a
  cancellation-free form. All rows share (d, κ), so the accepted proposals are iid draws of w
  and rejection runs on a pool (only the still-missing count is re-proposed, scaled by the
  observed acceptance rate): the same distribution as redrawing the rejected rows, in two or
  three vectorised rounds. With b = (d-1) / (2κ + sqrt(4κ² + (d-1)²)) and
  Z ~ Beta((d-1)/2, (d-1)/2), Wood's proposal is W = (1 - (1+b)Z) / (1 - (1-b)Z); we compute
  t = 1 - W = 2b·r, r = Z / (1 - Z + bZ), directly, drawing Z as (1 + N/R)/2 with
  R = sqrt(N² + V), N ~ N(0, 1), V ~ χ²_{d-1} (the cosine of a uniform direction: one Gamma
  and one normal per proposal, 1 ± N/R formed without cancellation), and write the acceptance
  test κW + (d-1)log(1 - x0·W) - c ≥ log U (x0 = (1-b)/(1+b),
  c = κx0 + (d-1)log(1 - x0²)) as

      2κb (1/(1+b) - r) + (d-1) [log1p((1-b) r) + log1p(-(1-b)/2)] ≥ log U,

  which stays accurate from κ = 1e-3 to 1e7 and for d up to 1e8 (1-b is also computed without
  cancellation). κ = 0 gives b = 1, every proposal is accepted and w = 1 - 2Z is exactly the
  first coordinate of a uniform point on the sphere.
  The Gamma variates use Marsaglia & Tsang (2000) on the O(N) scalars with the caller's
  ``torch.Generator`` (``torch.distributions`` has no generator argument).
* v comes from one standard normal draw g ∈ R^d per row: in the frame where μ = e1 the sample is
  x' = (w, sqrt(1-w²) g[1:] / ‖g[1:]‖), and a Householder reflection H = I - 2uuᵀ/‖u‖² maps e1 to
  ±μ (u = e1 ∓ μ, the sign picked so that ‖u‖² = 2(1 + |μ_1|) ≥ 2: stable for μ ≈ ±e1). No d×d
  matrix is formed; Q x' = σH x' reduces to x = a·g + c·μ with per-row scalars a, c plus a
  fix-up of coordinate 0, so the B×d work is one normal draw, two reductions (‖g[1:]‖² and
  ⟨μ[1:], g[1:]⟩, pairwise-summed so they stay accurate at d = 1e8) and a scale-and-add —
  O(N·d) time and memory, no float64 on B×d. The rows are processed in cache-sized blocks so
  that the reductions and the update read the freshly drawn normals from cache.

``mean_resultant_length(d, κ)`` = E⟨x, μ⟩ = A_d(κ) = I_{d/2}(κ) / I_{d/2-1}(κ), from SciPy's
exponentially scaled Bessel functions for small d and from the uniform (Debye) asymptotic
expansion of I_ν (DLMF 10.41.3, terms u_1..u_4) written directly as a ratio for large d.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["sample_vmf", "mean_resultant_length"]

# The B×d work runs in blocks of whole rows (or, for rows longer than a block, column segments of
# one row): the normal draw, the two reductions and the update of a block happen while it sits in
# cache (on CPU about 2 MiB per block; measured ~1.15× randn vs ~1.7× unblocked). On accelerators
# the blocks only bound the size of the scratch buffer.
_BLOCK_BYTES = {"cpu": 1 << 21}
_BLOCK_BYTES_DEFAULT = 1 << 28
# Rows up to this length use the (single-pass, float32-accumulating) vector_norm for ‖g‖².
_SHORT_ROW = 4096


# --------------------------------------------------------------------------- validation


def _check_dim(d: int) -> int:
    if isinstance(d, bool) or int(d) != d:
        raise ValueError(f"VMF dimension must be an integer, got {d!r}")
    d = int(d)
    if d < 2:
        raise ValueError(f"VMF needs dimension d >= 2 (the sphere S^(d-1) in R^d), got d = {d}")
    return d


def _check_kappa(kappa: float) -> float:
    if isinstance(kappa, torch.Tensor):
        if kappa.numel() != 1:
            raise ValueError("kappa must be a scalar")
        kappa = kappa.item()
    try:
        k = float(kappa)
    except (TypeError, ValueError):
        raise ValueError(f"kappa must be a real number, got {kappa!r}") from None
    if not math.isfinite(k) or k < 0:
        raise ValueError(f"VMF concentration kappa must be finite and >= 0, got {kappa!r}")
    return k


# --------------------------------------------------------------------------- scalar part


def _wood_b(d: int, kappa: float) -> tuple[float, float]:
    """Wood's b = (d-1) / (2κ + sqrt(4κ² + (d-1)²)) and 1 - b, both without cancellation."""
    m1 = float(d - 1)
    s = math.hypot(2.0 * kappa, m1)
    b = m1 / (2.0 * kappa + s)
    one_minus_b = (2.0 * kappa + 4.0 * kappa * kappa / (s + m1)) / (2.0 * kappa + s)
    return b, one_minus_b


def _uniform_open(n: int, generator, device) -> torch.Tensor:
    """U(0, 1] in float64 (so that log U is finite)."""
    return 1.0 - torch.rand(n, dtype=torch.float64, device=device, generator=generator)


def _sample_gamma(alpha: float, n: int, generator, device) -> torch.Tensor:
    """n iid Gamma(alpha, 1) in float64 (alpha >= 0.5), Marsaglia & Tsang (2000).

    Rejection runs on a pool: each round proposes a few more candidates than are still
    missing (acceptance is >= 0.95 for shape >= 1) and keeps the accepted ones in order."""
    boost = alpha < 1.0
    a = alpha + 1.0 if boost else alpha
    dd = a - 1.0 / 3.0
    cc = 1.0 / math.sqrt(9.0 * dd)
    parts, have = [], 0
    while have < n:
        m = int(1.06 * (n - have)) + 16
        x = torch.randn(m, dtype=torch.float64, device=device, generator=generator)
        logu = torch.log(_uniform_open(m, generator, device))
        y = cc * x
        ok = y > -1.0
        log1py = torch.log1p(torch.where(ok, y, torch.zeros_like(y)))
        # log U < x²/2 + dd(1 - v + log v), v = (1 + y)³, with 1 - v = -y(3 + y(3 + y))
        crit = 0.5 * x * x + dd * (3.0 * log1py - y * (3.0 + y * (3.0 + y)))
        got = dd * torch.exp(3.0 * log1py[ok & (logu < crit)])
        parts.append(got)
        have += got.numel()
    out = torch.cat(parts)[:n] if len(parts) > 1 else parts[0][:n]
    if boost:  # Gamma(alpha) = Gamma(alpha + 1) · U^(1/alpha)
        out = out * torch.exp(torch.log(_uniform_open(n, generator, device)) / alpha)
    return out


def _sample_one_minus_w(n: int, d: int, kappa: float, generator, device) -> torch.Tensor:
    """t = 1 - ⟨x, μ⟩ for n VMF(κ) samples on S^(d-1): Wood (1994) rejection, float64, (n,).

    All rows share (d, κ), so the accepted proposals are iid draws of t: rejection runs on a
    pool (each round proposes the missing count divided by the acceptance rate seen so far)
    rather than row by row, which keeps the number of rounds, and of small kernel launches, at
    two or three."""
    alpha = 0.5 * (d - 1)
    b, omb = _wood_b(d, kappa)
    two_kb = 2.0 * kappa * b
    inv_1pb = 1.0 / (1.0 + b)
    log_c = math.log1p(-0.5 * omb)
    parts, have, rate = [], 0, 1.0
    while have < n:
        m = int(1.1 * (n - have) / rate) + 16
        # Z ~ Beta(α, α) as (1 + N/R)/2, R = sqrt(N² + V), N ~ N(0,1), V ~ χ²_{d-1} = 2·Gamma(α)
        # (the cosine of a uniform direction); then r = Z / (1 - Z + bZ) = (R+N) / (R-N + b(R+N)),
        # with the smaller of R ± N written as V / (R + |N|).
        v = 2.0 * _sample_gamma(alpha, m, generator, device)
        nz = torch.randn(m, dtype=torch.float64, device=device, generator=generator)
        big = torch.sqrt(v + nz * nz) + nz.abs()
        small = v / big
        pos = nz >= 0
        r_plus = torch.where(pos, big, small)
        r = r_plus / (torch.where(pos, small, big) + b * r_plus)  # t = 2b·r
        if kappa == 0.0:  # b = 1: every proposal is accepted
            parts.append(2.0 * b * r)
            break
        logu = torch.log(_uniform_open(m, generator, device))
        lhs = two_kb * (inv_1pb - r) + (d - 1) * (torch.log1p(omb * r) + log_c)
        got = 2.0 * b * r[lhs >= logu]
        parts.append(got)
        have += got.numel()
        rate = max(got.numel() / m, 0.01)
    return torch.cat(parts)[:n] if len(parts) > 1 else parts[0][:n]


# --------------------------------------------------------------------------- sampler


def sample_vmf(
    mu: "torch.Tensor", kappa: float, *, generator: "torch.Generator | None" = None
) -> "torch.Tensor":
    """mu: (N, d) unit vectors (rows), any float dtype, CPU or CUDA. Returns (N, d) samples of
    VMF(kappa, mu_i), same dtype/device, each row unit norm.

    A 1-D ``mu`` of shape (d,) gives one sample of shape (d,). All randomness comes from
    ``generator`` (which must live on ``mu``'s device; ``None``: the global generator), so the
    same seed gives the same output on the same device. ``kappa = 0`` is the uniform
    distribution on the sphere. Raises ValueError for d < 2, kappa < 0 or non-finite kappa.
    The rows of ``mu`` are assumed to have unit norm (they are not renormalised).
    """
    if not isinstance(mu, torch.Tensor):
        raise TypeError(f"mu must be a torch.Tensor, got {type(mu).__name__}")
    if not mu.is_floating_point():
        raise ValueError(f"mu must be a floating-point tensor, got dtype {mu.dtype}")
    squeeze = mu.dim() == 1
    if squeeze:
        mu = mu.unsqueeze(0)
    if mu.dim() != 2:
        raise ValueError(f"mu must have shape (N, d), got {tuple(mu.shape)}")
    n_rows, d = mu.shape
    _check_dim(d)
    kappa = _check_kappa(kappa)
    device, dtype = mu.device, mu.dtype
    out = torch.empty((n_rows, d), dtype=dtype, device=device)
    if n_rows == 0:
        return out.squeeze(0) if squeeze else out

    # O(N) scalars, float64: w = 1 - t, sqrt(1 - w²) = sqrt(t (2 - t)), Householder signs.
    t = _sample_one_minus_w(n_rows, d, kappa, generator, device)
    w = 1.0 - t
    s = torch.sqrt(t * (2.0 - t))
    mu0 = mu[:, 0].to(torch.float64)
    # u = e1 - sigma·mu, H e1 = sigma·mu, Q = sigma·H maps e1 to mu; |u|² = 2·u0 >= 2.
    sigma = torch.where(mu0 < 0, 1.0, -1.0).to(torch.float64)
    u0 = 1.0 + mu0.abs()

    acc_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    block = max(2, _BLOCK_BYTES.get(device.type, _BLOCK_BYTES_DEFAULT) // mu.element_size())
    rows = min(n_rows, max(1, block // d))
    cols = min(d, block)
    scratch = torch.empty(rows * cols, dtype=dtype, device=device)
    n2 = torch.empty(n_rows, dtype=torch.float64, device=device)

    def fill(r0: int, r1: int) -> None:
        o, m = out[r0:r1], mu[r0:r1]
        n2[r0:r1], dot = _draw_and_reduce(o, m, cols, scratch, generator, acc_dtype)
        # x' = (w, s·g[1:]/n) in the e1 frame; x = sigma·H x' = a·g + c·mu, then fix x_0.
        q = s[r0:r1] / torch.sqrt(n2[r0:r1])
        e = q * dot / u0[r0:r1]
        sg = sigma[r0:r1]
        c = w[r0:r1] - sg * e
        o.mul_((sg * q).to(dtype).unsqueeze(1))
        o.addcmul_(m, c.to(dtype).unsqueeze(1))
        o[:, 0] = (e + c * mu0[r0:r1]).to(dtype)

    for r0 in range(0, n_rows, rows):
        fill(r0, min(r0 + rows, n_rows))
    # ‖g[1:]‖ = 0 has probability 0 (in floating point only conceivable for tiny d): redraw
    for i in torch.nonzero(n2 == 0).flatten().tolist():
        while n2[i] == 0:
            fill(i, i + 1)
    return out.squeeze(0) if squeeze else out


def _draw_and_reduce(
    o: torch.Tensor, m: torch.Tensor, cols: int, scratch: torch.Tensor, generator, acc_dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the (r, d) block ``o`` with N(0, 1); return ‖o[:, 1:]‖² and ⟨o[:, 1:], m[:, 1:]⟩ in
    float64. The sums are pairwise (torch.sum), accurate for d ~ 1e8, unlike the float32
    accumulators of ``vector_norm`` and BLAS dots (~1e-3 relative error at d = 2e7); segments
    of ``cols`` columns keep each product in the cache-sized ``scratch`` buffer."""
    r, d = o.shape
    n2 = dot = None
    for c0 in range(0, d, cols):
        c1 = min(c0 + cols, d)
        seg = o[:, c0:c1]
        seg.normal_(generator=generator)
        lo = 1 if c0 == 0 else 0  # coordinate 0 is replaced by w
        g, mm = seg[:, lo:], m[:, c0 + lo : c1]
        buf = scratch[: g.numel()].view(g.shape)
        if g.shape[1] <= _SHORT_ROW:  # accumulation error ~ length · eps: fine, and one pass
            part_n2 = torch.linalg.vector_norm(g, dim=1, dtype=acc_dtype).to(torch.float64) ** 2
        else:
            part_n2 = torch.mul(g, g, out=buf).sum(dim=1, dtype=acc_dtype).to(torch.float64)
        part_dot = torch.mul(g, mm, out=buf).sum(dim=1, dtype=acc_dtype).to(torch.float64)
        n2 = part_n2 if n2 is None else n2 + part_n2
        dot = part_dot if dot is None else dot + part_dot
    return n2, dot


# --------------------------------------------------------------------------- A_d(kappa)

_DEBYE_MIN_ORDER = 100.0  # use the Debye expansion when both orders are >= this


def _debye_tail(nu: float, p: float) -> float:
    """sum_{k=1..4} u_k(p) / nu^k of the uniform expansion of I_nu (DLMF 10.41.10)."""
    p2 = p * p
    u1 = p * (3.0 - 5.0 * p2) / 24.0
    u2 = p2 * (81.0 - 462.0 * p2 + 385.0 * p2 * p2) / 1152.0
    u3 = (
        p * p2 * (30375.0 - 369603.0 * p2 + 765765.0 * p2 * p2 - 425425.0 * p2 * p2 * p2) / 414720.0
    )
    u4 = (
        p2
        * p2
        * (
            4465125.0
            - 94121676.0 * p2
            + 349922430.0 * p2 * p2
            - 446185740.0 * p2 * p2 * p2
            + 185910725.0 * p2 * p2 * p2 * p2
        )
        / 39813120.0
    )
    inv = 1.0 / nu
    return inv * (u1 + inv * (u2 + inv * (u3 + inv * u4)))


def _log_ratio_debye(nu: float, x: float) -> float:
    """log(I_nu(x) / I_{nu-1}(x)) from the uniform asymptotic expansion, nu - 1 >= 100.

    log I_a(x) ≈ q_a + a·log(x / (a + q_a)) - ½ log(2π q_a) + log S_a, q_a = sqrt(a² + x²);
    the difference between a = nu and a = nu - 1 is assembled from small, cancellation-free
    pieces, so it keeps full relative accuracy even for nu ~ 1e8.
    """
    mu = nu - 1.0
    q_nu = math.hypot(nu, x)
    q_mu = math.hypot(mu, x)
    dq = (2.0 * nu - 1.0) / (q_nu + q_mu)  # q_nu - q_mu
    mq = mu + q_mu
    log_ratio = (
        dq + math.log(x / mq) - nu * math.log1p((1.0 + dq) / mq) - 0.5 * math.log1p(dq / q_mu)
    )
    log_ratio += math.log1p(_debye_tail(nu, nu / q_nu)) - math.log1p(_debye_tail(mu, mu / q_mu))
    return log_ratio


def _ratio_gauss_cf(nu: float, x: float) -> float:
    """I_nu(x) / I_{nu-1}(x) by Gauss' continued fraction (modified Lentz); fast for x << nu."""
    # R = 1 / (b_0 + 1 / (b_1 + ...)), b_k = 2(nu + k)/x, from 1/R_nu = 2nu/x + R_{nu+1}.
    tiny = 1e-300
    f = tiny
    c, dd = f, 0.0
    for k in range(100_000):
        bk = 2.0 * (nu + k) / x
        dd = bk + dd
        dd = tiny if dd == 0 else dd
        c = bk + 1.0 / c
        c = tiny if c == 0 else c
        dd = 1.0 / dd
        delta = c * dd
        f *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return f


def mean_resultant_length(d: int, kappa: float) -> float:
    """A_d(kappa) = I_{d/2}(kappa)/I_{d/2-1}(kappa), computed stably for huge d (1e8) and kappa in
    [1e-3, 1e7] (e.g. Perron/Gauss continued fraction or scipy.special.ive ratio where it does
    not under/overflow); pure numpy/scipy.

    This is E⟨x, μ⟩ for x ~ VMF(κ, μ) on S^(d-1). Small d (< 202): ratio of SciPy's
    exponentially scaled Bessel functions ``ive`` (Gauss' continued fraction when those
    underflow, i.e. κ tiny); larger d: the uniform (Debye) expansion written as a ratio, accurate
    to ~1e-13 relative. Raises ValueError for d < 2 or kappa < 0.
    """
    from scipy.special import ive

    d = _check_dim(d)
    kappa = _check_kappa(kappa)
    if kappa == 0.0:
        return 0.0
    nu = 0.5 * d
    if nu - 1.0 >= _DEBYE_MIN_ORDER:
        return float(min(1.0, math.exp(_log_ratio_debye(nu, kappa))))
    with np.errstate(all="ignore"):
        num = float(ive(nu, kappa))
        den = float(ive(nu - 1.0, kappa))
    if math.isfinite(num) and math.isfinite(den) and num > 1e-280 and den > 1e-280:
        return float(min(1.0, num / den))
    return float(min(1.0, _ratio_gauss_cf(nu, kappa)))
