"""Scoring and pictures for image attacks: the separate step that sees the originals.

Reconstruction attacks return images only; these functions compare them with the private
originals afterwards (as breaching's ``analysis.report``). Images are float arrays in [0, 1]
of shape (C, H, W) (or stacks (N, C, H, W)), the layout of :class:`privtool.data.ImageData`.

* SSIM (Wang et al. 2004, Gaussian-weighted as the reconstruction papers use it) via
  scikit-image, MSE and PSNR for reconstructions (paper 1 §5.3.1: mean SSIM, median MSE);
* MIA distance (paper 3 §III): the minimum L2 distance (or minimum 1 − SSIM, for greyscale
  faces) between an inverted image and all training images of its class;
* PNG grids with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from privtool.errors import PrivtoolError

MSE_FLOOR = 1e-10  # PSNR of identical images is capped at 10·log10(1/1e-10) = 100 dB


def _as_image(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise PrivtoolError(f"{what} must be an image (C, H, W) or (H, W), got shape {a.shape}")
    return a


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_image(a, "image a"), _as_image(b, "image b")
    if a.shape != b.shape:
        raise PrivtoolError(f"images to compare differ in shape: {a.shape} vs {b.shape}")
    return a, b


#: Wang et al. 2004 §III.C: an 11×11 circular-symmetric Gaussian window with σ = 1.5 and
#: population (biased) variances, as their reference ``ssim_index.m`` and breaching's and the
#: reconstruction papers' SSIM compute it (scikit-image's default, a 7×7 uniform window with
#: sample covariances, gives other numbers).
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11×11: scikit-image's int(3.5·σ + 0.5) at σ = 1.5
SSIM_VARIANT = (
    "Gaussian-weighted (Wang et al. 2004: sigma 1.5, 11x11 window, population "
    "covariance, data range 1)"
)


def ssim_window(shape: Sequence[int]) -> int:
    """The side of the Gaussian SSIM window for images of ``shape`` (…, H, W): 11, or the
    largest odd side that fits images smaller than 11 pixels (the Gaussian then truncated)."""
    side = min(shape[-2:])
    win = min(2 * SSIM_RADIUS + 1, side if side % 2 else side - 1)
    if win < 3:
        raise PrivtoolError(f"SSIM needs images of at least 3×3 pixels, got {tuple(shape[-2:])}")
    return win


def ssim(a: Any, b: Any) -> float:
    """Structural similarity of two images in [0, 1] (Wang et al. 2004, :data:`SSIM_VARIANT`,
    via scikit-image with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1``; channels averaged). Images under 11 pixels a side keep the Gaussian
    (scikit-image filters with reflected borders) and average the SSIM map over the pixels
    at least (w − 1)/2 from the border for the largest odd w that fits (:func:`ssim_window`)."""
    from skimage.metrics import structural_similarity

    a, b = _pair(a, b)
    return float(
        structural_similarity(
            a,
            b,
            data_range=1.0,
            channel_axis=0,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            win_size=ssim_window(a.shape),
            use_sample_covariance=False,
        )
    )


def mse(a: Any, b: Any) -> float:
    """Mean squared error per pixel."""
    a, b = _pair(a, b)
    return float(np.mean((a - b) ** 2))


def psnr(a: Any, b: Any) -> float:
    """Peak signal-to-noise ratio in dB for data range 1 (capped at 100 dB for identical
    images, so metrics stay finite)."""
    return float(10.0 * np.log10(1.0 / max(mse(a, b), MSE_FLOOR)))


def match_batch(originals: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """The order of a batch is not in its gradient: pair each original with a reconstruction by
    minimum total MSE (Hungarian assignment). Returns ``perm`` with reconstruction
    ``perm[i]`` belonging to original ``i``."""
    from scipy.optimize import linear_sum_assignment

    o = np.asarray(originals, dtype=np.float64).reshape(len(originals), -1)
    r = np.asarray(reconstructions, dtype=np.float64).reshape(len(reconstructions), -1)
    cost = ((o[:, None, :] - r[None, :, :]) ** 2).mean(-1)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(o), dtype=np.int64)
    perm[rows] = cols
    return perm


def score_reconstructions(
    originals: np.ndarray, reconstructions: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-image SSIM, MSE and PSNR for batches: originals and reconstructions of shape
    (T, B, C, H, W), matched within each batch by :func:`match_batch`. Returns arrays of shape
    (T, B) and ``perm`` (T, B)."""
    originals = np.asarray(originals)
    reconstructions = np.asarray(reconstructions)
    if originals.shape != reconstructions.shape or originals.ndim != 5:
        raise PrivtoolError(
            f"originals {originals.shape} and reconstructions "
            f"{reconstructions.shape} must both be (T, B, C, H, W)"
        )
    t, b = originals.shape[:2]
    out = {k: np.zeros((t, b)) for k in ("ssim", "mse", "psnr")}
    out["perm"] = np.zeros((t, b), dtype=np.int64)
    for i in range(t):
        perm = match_batch(originals[i], reconstructions[i]) if b > 1 else np.zeros(1, np.int64)
        out["perm"][i] = perm
        for j in range(b):
            o, r = originals[i, j], reconstructions[i, perm[j]]
            out["ssim"][i, j], out["mse"][i, j], out["psnr"][i, j] = (
                ssim(o, r),
                mse(o, r),
                psnr(o, r),
            )
    return out


def summarize_reconstructions(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Paper 1's summary: mean SSIM and median MSE (MSE is unbounded, §5.3.1), plus mean PSNR
    and the spread of each."""
    s, m, p = (np.asarray(scores[k], dtype=np.float64).ravel() for k in ("ssim", "mse", "psnr"))
    return {
        "ssim": float(s.mean()),
        "ssim_median": float(np.median(s)),
        "ssim_std": float(s.std()),
        "ssim_variant": SSIM_VARIANT,
        "mse": float(np.median(m)),
        "mse_mean": float(m.mean()),
        "psnr": float(p.mean()),
        "psnr_median": float(np.median(p)),
    }


MIA_DISTANCES = ("l2", "ssim")


def mia_distance(image: Any, class_images: np.ndarray, metric: str = "l2") -> tuple[float, int]:
    """Paper 3 §III: the minimum distance between an inverted ``image`` and all training images
    of its class (the worst case for the defender). ``metric`` ``l2``: Euclidean distance over
    all pixels (Table I); ``ssim``: 1 − SSIM (greyscale faces, Table II). Returns (distance,
    index of the nearest training image)."""
    if metric not in MIA_DISTANCES:
        raise PrivtoolError(f"unknown MIA distance {metric!r}; valid: {', '.join(MIA_DISTANCES)}")
    x = _as_image(image, "inverted image")
    pool = np.asarray(class_images, dtype=np.float64)
    if pool.ndim != 4 or len(pool) == 0 or pool.shape[1:] != x.shape:
        raise PrivtoolError(
            f"MIA distance needs a non-empty stack of training images shaped like "
            f"the inverted image {x.shape}, got {pool.shape}"
        )
    if metric == "l2":
        d = np.sqrt(((pool - x[None]) ** 2).reshape(len(pool), -1).sum(1))
    else:
        d = np.array([1.0 - ssim(x, p) for p in pool])
    i = int(np.argmin(d))
    return float(d[i]), i


# --------------------------------------------------------------------------- pictures


def _show(ax: Any, img: np.ndarray) -> None:
    img = np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.transpose(img, (1, 2, 0)), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def save_grid(
    path: str | Path,
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    *,
    title: str | None = None,
    captions: Sequence[str] | None = None,
) -> Path:
    """Write a PNG grid: one row per ``(label, images)`` (images (C, H, W) in [0, 1]), the
    label at the left; optional ``captions`` under the columns of the last row."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not rows or not any(len(imgs) for _, imgs in rows):
        raise PrivtoolError("an image grid needs at least one image")
    n_cols = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(1.1 * n_cols + 1.2, 1.2 * len(rows) + 0.4), squeeze=False
    )
    for r, (label, imgs) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            if c < len(imgs):
                _show(ax, imgs[c])
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if captions:
        for c, cap in enumerate(captions[:n_cols]):
            axes[-1][c].set_xlabel(cap, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def mechanism_grid(
    attack_dirs: Iterable[str | Path], path: str | Path, *, n_images: int = 8
) -> Path:
    """Paper 1 Figs. 2–3: originals in the first row, then one row of reconstructions per
    attacked run (mechanism / ε), from each attack directory's ``reconstructions.npz``. All
    directories must have attacked the same target images."""
    from privtool.artifacts import load_run

    rows: list[tuple[str, Sequence[np.ndarray]]] = []
    first: np.ndarray | None = None
    for d in map(Path, attack_dirs):
        m = load_run(d, stage="attack")["metrics"]  # every file checked against meta.json
        f = d / "reconstructions.npz"
        if not f.is_file():
            raise PrivtoolError(
                f"{f} is missing; run `privtool attack --attack iga --target RUN --out {d}` first"
            )
        with np.load(f) as z:
            orig, rec, idx = z["originals"], z["matched"], z["indices"]
        if first is None:
            first = idx
            rows.append(("original", list(orig.reshape(-1, *orig.shape[2:])[:n_images])))
        elif not np.array_equal(idx, first):
            raise PrivtoolError(
                f"{d} attacked other images than the first directory; use the "
                f"same attack.seed and attack.n_targets for every run"
            )
        rows.append((_row_label(m), list(rec.reshape(-1, *rec.shape[2:])[:n_images])))
    return save_grid(path, rows)


def _row_label(metrics: dict[str, Any]) -> str:
    """The attacked run's mechanism labels its row (``Mechanism.label``)."""
    from privtool.mechanisms import MECHANISMS, Mechanism

    mech = metrics.get("target_mechanism", "?")
    return (MECHANISMS.get(mech) if mech in MECHANISMS else Mechanism).label(metrics)
