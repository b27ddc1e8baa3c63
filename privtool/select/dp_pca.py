"""The two private-data releases of NearPrivate (paper 2, Alg. 2): DP-PCA by Analyze Gauss and
Laplace-noised support counts. Pure numpy/scipy; the caller passes the random generator.

Analyze Gauss (Dwork, Talwar, Thakurta & Zhang 2014, Alg. 1): rows scaled to ‖x‖ ≤ 1, release
A = XᵀX + E with E symmetric, its upper triangle (diagonal included) i.i.d. N(0, σ²), and take
the top-p eigenvectors of A. One added/removed row moves XᵀX by xxᵀ, ‖xxᵀ‖_F = ‖x‖² ≤ 1, so the
L2 sensitivity Δ of the upper triangle is 1 (√2 when one row is replaced by another:
‖xxᵀ − x'x'ᵀ‖_F ≤ √2). σ is the analytic Gaussian mechanism's (Balle & Wang 2018, Thm. 8): the
smallest σ with Φ(Δ/2σ − εσ/Δ) − e^ε Φ(−Δ/2σ − εσ/Δ) ≤ δ, exact for every ε (dp_accounting's
``get_sigma_gaussian``, rounded up). Dwork et al. state Analyze Gauss with the classic
σ = Δ·√(2 ln(1.25/δ))/ε (Dwork & Roth 2014, Thm. A.1, proved for ε < 1 only), 1.3–1.44× larger
below ε = 1 at δ = 1e-5 for the same guarantee; :func:`classic_gaussian_sigma` keeps it for
comparison. The release records which calibration it used.

Support counts (Alg. 2 lines 5–10): each voting private point adds 1 to the count of its nearest
uncertain public point; Laplace(Δ₁/ε_support) per count (Dwork & Roth 2014, Thm. 3.6) makes the
whole histogram ε_support-DP. A point's vote depends only on that point (its embedding, the
released DP-PCA and the public data), so the histogram H(D) = Σ_{x ∈ V(D)} e_{vote(x)} over the
voters V(D), and Δ₁ = max over neighbours of |V(D) △ V(D')| — chosen from the configuration and
the relation only, never from the private data's size (which neighbours change):

- every point votes (``private_k`` null), add/remove: V(D') = V(D) ∪ {x}, Δ₁ = 1;
- every point votes, replace-one: V(D') = V(D) − {y} ∪ {x}, one vote moves, Δ₁ = 2;
- top-k filter configured (``private_k`` = k, V = the k most uncertain, all of D when |D| ≤ k;
  ties by position, which neighbours keep in order), add/remove: with S = D, D' = S ∪ {x},
  top-k(D') is top-k(S) (x not in it), top-k(S) ∪ {x} (|S| < k), or top-k(S) − {s_k} ∪ {x}
  (s_k the k-th of S, pushed out): Δ₁ ≤ 2, reached at |D| ≥ k — in particular at |D| = k,
  where D has every point voting and D' only k of k + 1;
- top-k filter, replace-one: with S = D − {y}, each of top-k(S ∪ {y}) and top-k(S ∪ {x}) is
  top-k(S) or top-(k−1)(S) plus the new point (S plus it when |S| < k), so they differ in at
  most one point each way: Δ₁ ≤ 2.

So Δ₁ = 1 only for add/remove with every point voting, and 2 otherwise (tests enumerate every
neighbour of small data sets, |D| = k − 1, k, k + 1, against this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privtool.errors import PrivtoolError
from privtool.mechanisms.base import ADD_REMOVE, REPLACE_ONE

RELATIONS = (ADD_REMOVE, REPLACE_ONE)


def _check_relation(relation: str) -> None:
    if relation not in RELATIONS:
        raise PrivtoolError(
            f"neighbouring relation {relation!r} is not one of: {', '.join(RELATIONS)}"
        )


def pca_sensitivity(relation: str) -> float:
    """L2 sensitivity of the upper triangle of XᵀX for rows with ‖x‖ ≤ 1 (see top)."""
    _check_relation(relation)
    return 1.0 if relation == ADD_REMOVE else math.sqrt(2.0)


def support_sensitivity(relation: str, *, top_k: bool) -> float:
    """L1 sensitivity of the neighbour-count histogram (see top): ``top_k`` is whether a
    top-k voter filter is configured (``near_private.private_k`` not null), whatever the size
    of the private data."""
    _check_relation(relation)
    return 2.0 if (top_k or relation == REPLACE_ONE) else 1.0


def classic_gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """σ = Δ·√(2 ln(1.25/δ))/ε, the Gaussian mechanism of Dwork & Roth 2014 Thm. A.1 (ε < 1);
    not used by privtool's releases (the analytic σ is smaller for the same guarantee)."""
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def analytic_gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """The smallest σ whose Gaussian mechanism with L2 sensitivity Δ is (ε, δ)-DP (Balle & Wang
    2018, Thm. 8), from dp_accounting's ``get_sigma_gaussian`` (root of the exact privacy
    profile, to 1e-12) at Δ = 1, scaled by Δ. Pessimistic: the root is moved up until the
    exact profile at it is ≤ δ, so the solver's tolerance never makes σ too small."""
    from dp_accounting.gaussian_mechanism import get_sigma_gaussian
    from scipy.special import log_ndtr

    def log_delta(sigma: float) -> float:  # Balle & Wang 2018, Thm. 8, at Δ = 1, in logs
        a, b = 1 / (2 * sigma), epsilon * sigma
        x, y = log_ndtr(a - b), epsilon + log_ndtr(-a - b)
        return x + math.log1p(-math.exp(y - x)) if y < x else -math.inf

    sigma = float(get_sigma_gaussian(epsilon, delta, tol=1e-12))
    step = 1e-12 + 1e-12 * sigma
    while log_delta(sigma) > math.log(delta):
        sigma += step
        step *= 2
    return sigma * sensitivity


CALIBRATION = "analytic Gaussian (Balle & Wang 2018, Thm. 8)"


def gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float = 1.0) -> tuple[float, str]:
    """σ for an (ε, δ) Gaussian release and which calibration gave it (the analytic one, for
    every ε; see top)."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise PrivtoolError(f"epsilon_pca={epsilon!r} is not allowed: a number > 0")
    if not 0 < delta < 1:
        raise PrivtoolError(f"delta_pca={delta!r} is not allowed: a number in (0, 1)")
    return analytic_gaussian_sigma(
        epsilon=epsilon, delta=delta, sensitivity=sensitivity
    ), CALIBRATION


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


def analyze_gauss(
    x: np.ndarray,
    *,
    n_components: int,
    epsilon: float,
    delta: float,
    rng: np.random.Generator,
    relation: str = ADD_REMOVE,
) -> DPPCA:
    """(ε, δ)-DP top-``n_components`` principal directions of the rows of ``x`` (each must have
    ‖x‖ ≤ 1; use :func:`normalise_rows`). Dwork et al. 2014, Alg. 1 (see top)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise PrivtoolError(f"DP-PCA needs a non-empty (n, d) matrix, got shape {x.shape}")
    if np.any(np.linalg.norm(x, axis=1) > 1 + 1e-9):
        raise PrivtoolError("DP-PCA rows must have norm <= 1 (Analyze Gauss); normalise them first")
    d = x.shape[1]
    if not 1 <= n_components <= d:
        raise PrivtoolError(
            f"select.n_components={n_components} is not allowed: an integer in "
            f"[1, {d}] (the embedding width)"
        )
    a, sigma, calibration = noisy_second_moment(
        x, epsilon=epsilon, delta=delta, rng=rng, relation=relation
    )
    vals, vecs = np.linalg.eigh(a)
    top = np.argsort(vals)[::-1][:n_components]
    return DPPCA(
        components=vecs[:, top],
        sigma=sigma,
        calibration=calibration,
        sensitivity=pca_sensitivity(relation),
    )


def noisy_second_moment(
    x: np.ndarray,
    *,
    epsilon: float,
    delta: float,
    rng: np.random.Generator,
    relation: str = ADD_REMOVE,
) -> tuple[np.ndarray, float, str]:
    """Analyze Gauss's release XᵀX + E (rows of ``x`` with ‖x‖ ≤ 1): (A, σ, calibration)."""
    sigma, calibration = gaussian_sigma(
        epsilon=epsilon, delta=delta, sensitivity=pca_sensitivity(relation)
    )
    return x.T @ x + noise_matrix(x.shape[1], sigma, rng), sigma, calibration


def nearest(a: np.ndarray, b: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """For each row of ``a`` the index of its nearest row of ``b`` (Euclidean), in chunks."""
    b = np.asarray(b, dtype=np.float64)
    b_sq = (b * b).sum(1)
    out = np.empty(len(a), dtype=np.int64)
    for i in range(0, len(a), chunk):
        part = np.asarray(a[i : i + chunk], dtype=np.float64)
        d = b_sq[None, :] - 2.0 * part @ b.T
        out[i : i + chunk] = d.argmin(1)
    return out


def noisy_support(
    votes: np.ndarray, n_bins: int, *, epsilon: float, sensitivity: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float]:
    """Neighbour counts of ``n_bins`` public points from the private points' ``votes`` (bin
    indices) plus Laplace(Δ₁/ε) each: (noisy counts, exact counts, Laplace scale)."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise PrivtoolError(f"epsilon_support={epsilon!r} is not allowed: a number > 0")
    counts = np.bincount(np.asarray(votes, dtype=np.int64), minlength=n_bins).astype(np.float64)
    scale = sensitivity / epsilon
    return counts + rng.laplace(0.0, scale, size=n_bins), counts, scale
