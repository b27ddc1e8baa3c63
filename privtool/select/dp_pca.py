"""The two private-data releases of NearPrivate (paper 2, Alg. 2): DP-PCA by Analyze Gauss and
Laplace-noised support counts. Pure numpy/scipy; the caller passes the random generator.

Analyze Gauss (Dwork, Talwar, Thakurta & Zhang 2014, Alg. 1): rows scaled to ‖x‖ ≤ 1, release
A = XᵀX + E with E symmetric, its upper triangle (diagonal included) i.i.d. N(0, σ²), and take
the top-p eigenvectors of A. One added/removed row moves XᵀX by xxᵀ, ‖xxᵀ‖_F = ‖x‖² ≤ 1, so the
L2 sensitivity Δ of the upper triangle is 1 (√2 when one row is replaced by another:
‖xxᵀ − x'x'ᵀ‖_F ≤ √2). σ = Δ·√(2 ln(1.25/δ))/ε (Dwork & Roth 2014, Thm. A.1), which that theorem
proves for ε < 1; for ε ≥ 1 privtool uses the analytic Gaussian mechanism (Balle & Wang 2018,
Thm. 8), exact for every ε, and says so.

Support counts (Alg. 2 lines 5–10): each voting private point adds 1 to the count of its nearest
uncertain public point; Laplace(Δ₁/ε_support) per count (Dwork & Roth 2014, Thm. 3.6) makes the
whole histogram ε_support-DP. Δ₁ = 1 when every private point votes under add/remove; 2 when only
the k most uncertain vote (one added point can enter the top k and push another out) or when
neighbours replace a point (one vote moves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privtool.errors import PrivtoolError

ADD_REMOVE = "add/remove one record"
REPLACE_ONE = "replace one record"
RELATIONS = (ADD_REMOVE, REPLACE_ONE)


def _check_relation(relation: str) -> None:
    if relation not in RELATIONS:
        raise PrivtoolError(f"neighbouring relation {relation!r} is not one of: "
                            f"{', '.join(RELATIONS)}")


def pca_sensitivity(relation: str) -> float:
    """L2 sensitivity of the upper triangle of XᵀX for rows with ‖x‖ ≤ 1 (see top)."""
    _check_relation(relation)
    return 1.0 if relation == ADD_REMOVE else math.sqrt(2.0)


def support_sensitivity(relation: str, *, top_k: bool) -> float:
    """L1 sensitivity of the neighbour-count histogram (see top)."""
    _check_relation(relation)
    return 2.0 if (top_k or relation == REPLACE_ONE) else 1.0


def classic_gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """σ = Δ·√(2 ln(1.25/δ))/ε, the Gaussian mechanism of Dwork & Roth 2014 Thm. A.1 (ε < 1)."""
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def analytic_gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """The smallest σ whose Gaussian mechanism is (ε, δ)-DP (Balle & Wang 2018, Thm. 8):
    Φ(Δ/2σ − εσ/Δ) − e^ε Φ(−Δ/2σ − εσ/Δ) ≤ δ, solved by bisection on σ."""
    from scipy.special import log_ndtr

    def excess(sigma: float) -> float:
        a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
        first = math.exp(log_ndtr(a - b))
        second = math.exp(epsilon + log_ndtr(-a - b))
        return first - second - delta

    lo, hi = 1e-6 * sensitivity, sensitivity
    while excess(hi) > 0:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if excess(mid) > 0:
            lo = mid
        else:
            hi = mid
    return hi


def gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float = 1.0) -> tuple[float, str]:
    """σ for an (ε, δ) Gaussian release and which calibration gave it (classic for ε < 1, as
    Analyze Gauss states it; analytic otherwise, where the classic bound is not proved)."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise PrivtoolError(f"epsilon_pca={epsilon!r} is not allowed: a number > 0")
    if not 0 < delta < 1:
        raise PrivtoolError(f"delta_pca={delta!r} is not allowed: a number in (0, 1)")
    if epsilon < 1:
        return classic_gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=sensitivity), \
            "classic (Dwork & Roth 2014, Thm. A.1)"
    return analytic_gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=sensitivity), \
        "analytic (Balle & Wang 2018; the classic bound needs epsilon < 1)"


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit ℓ2 norm (zero rows stay zero), so ‖x‖ ≤ 1 as Analyze Gauss needs."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


@dataclass(frozen=True)
class DPPCA:
    """The released principal directions (columns of ``components``, d × p) and the noise."""

    components: np.ndarray
    sigma: float
    calibration: str
    sensitivity: float

    def project(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.components


def noise_matrix(d: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Symmetric d × d noise: upper triangle (with the diagonal) i.i.d. N(0, σ²), mirrored."""
    upper = np.triu(rng.normal(0.0, sigma, size=(d, d)))
    return upper + np.triu(upper, 1).T


def analyze_gauss(x: np.ndarray, *, n_components: int, epsilon: float, delta: float,
                  rng: np.random.Generator, relation: str = ADD_REMOVE) -> DPPCA:
    """(ε, δ)-DP top-``n_components`` principal directions of the rows of ``x`` (each must have
    ‖x‖ ≤ 1; use :func:`normalise_rows`). Dwork et al. 2014, Alg. 1 (see top)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise PrivtoolError(f"DP-PCA needs a non-empty (n, d) matrix, got shape {x.shape}")
    if np.any(np.linalg.norm(x, axis=1) > 1 + 1e-9):
        raise PrivtoolError("DP-PCA rows must have norm <= 1 (Analyze Gauss); normalise them first")
    d = x.shape[1]
    if not 1 <= n_components <= d:
        raise PrivtoolError(f"select.n_components={n_components} is not allowed: an integer in "
                            f"[1, {d}] (the embedding width)")
    a, sigma, calibration = noisy_second_moment(x, epsilon=epsilon, delta=delta, rng=rng,
                                                relation=relation)
    vals, vecs = np.linalg.eigh(a)
    top = np.argsort(vals)[::-1][:n_components]
    return DPPCA(components=vecs[:, top], sigma=sigma, calibration=calibration,
                 sensitivity=pca_sensitivity(relation))


def noisy_second_moment(x: np.ndarray, *, epsilon: float, delta: float,
                        rng: np.random.Generator, relation: str = ADD_REMOVE
                        ) -> tuple[np.ndarray, float, str]:
    """Analyze Gauss's release XᵀX + E (rows of ``x`` with ‖x‖ ≤ 1): (A, σ, calibration)."""
    sigma, calibration = gaussian_sigma(epsilon=epsilon, delta=delta,
                                        sensitivity=pca_sensitivity(relation))
    return x.T @ x + noise_matrix(x.shape[1], sigma, rng), sigma, calibration


def nearest(a: np.ndarray, b: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """For each row of ``a`` the index of its nearest row of ``b`` (Euclidean), in chunks."""
    b = np.asarray(b, dtype=np.float64)
    b_sq = (b * b).sum(1)
    out = np.empty(len(a), dtype=np.int64)
    for i in range(0, len(a), chunk):
        part = np.asarray(a[i:i + chunk], dtype=np.float64)
        d = b_sq[None, :] - 2.0 * part @ b.T
        out[i:i + chunk] = d.argmin(1)
    return out


def noisy_support(votes: np.ndarray, n_bins: int, *, epsilon: float, sensitivity: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Neighbour counts of ``n_bins`` public points from the private points' ``votes`` (bin
    indices) plus Laplace(Δ₁/ε) each: (noisy counts, exact counts, Laplace scale)."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise PrivtoolError(f"epsilon_support={epsilon!r} is not allowed: a number > 0")
    counts = np.bincount(np.asarray(votes, dtype=np.int64), minlength=n_bins).astype(np.float64)
    scale = sensitivity / epsilon
    return counts + rng.laplace(0.0, scale, size=n_bins), counts, scale
