"""Which classes and which records a membership attack exposes (issue 20, Deliver 3).

Pure numpy over one attack's scores (higher = member) and the evaluation set's labels, written
beside the attack's ROC by :class:`~privtool.attacks.membership.MembershipAttack`:

* ``per_class.csv`` / metrics ``per_class`` — the attack scored on each class's members and
  non-members alone (AUC, TPR at 0.1 % and 1 % FPR, with the counts: a class of 100
  non-members cannot resolve 0.1 % FPR, where the TPR is that of zero false positives);
* ``records.csv`` — every evaluation point's score and its **exposure**, the FPR of the
  threshold at its own score (the share of non-members scoring at least as high; a tie counts
  as flagged, as the ROC's tie step does). A member with exposure below 0.1 % is caught by
  the attack at 0.1 % FPR (strictly below, as ``tpr_at_fpr`` counts). Calibration reads it;
* ``exposed.csv`` and ``grid.png`` — the k training records with the lowest exposure (highest
  score), their images in a grid (calibration gathers every attack's ``grid.png`` per
  mechanism, so the report shows which digits leak as ε grows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from privtool.attacks.audit import LOW_FPRS, auc, roc_curve, tpr_at_fpr

TOP_K = 16


def per_class_metrics(
    scores: np.ndarray, member: np.ndarray, labels: np.ndarray, classes: list[int] | range
) -> list[dict[str, Any]]:
    """One row per class: n_in, n_out, AUC and TPR at the low FPRs (None where the class
    lacks members or non-members)."""
    s, m, y = np.asarray(scores, float), np.asarray(member, bool), np.asarray(labels)
    rows = []
    for c in classes:
        sel = y == c
        n_in, n_out = int((sel & m).sum()), int((sel & ~m).sum())
        row: dict[str, Any] = {
            "class": int(c),
            "n_in": n_in,
            "n_out": n_out,
            "auc": None,
            **{k: None for k in LOW_FPRS},
        }
        if n_in and n_out:
            roc = roc_curve(s[sel], m[sel])
            row["auc"] = auc(roc)
            row.update({k: tpr_at_fpr(roc, f) for k, f in LOW_FPRS.items()})
        rows.append(row)
    return rows


def exposure(scores: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Per point, the share of non-members scoring at least as high (the FPR of a threshold
    at the point's own score)."""
    s, m = np.asarray(scores, float), np.asarray(member, bool)
    out_sorted = np.sort(s[~m])
    return (out_sorted.size - np.searchsorted(out_sorted, s, side="left")) / out_sorted.size


def top_exposed(scores: np.ndarray, member: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Positions of the ``k`` members with the highest scores (equal scores: by position,
    for display only; no metric depends on it)."""
    s, m = np.asarray(scores, float), np.asarray(member, bool)
    pos = np.flatnonzero(m)
    order = np.lexsort((pos, -s[pos]))
    return pos[order[:k]]


def exposed_grid(path: Path, images: np.ndarray, titles: list[str], suptitle: str) -> None:
    """The records' images (n, C, H, W) in [0, 1] as one PNG grid with a title each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(8, max(n, 1))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.45 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, im, t in zip(axes.ravel(), images, titles):
        im = np.clip(np.asarray(im, float), 0, 1)
        ax.imshow(
            im[0] if im.shape[0] == 1 else np.moveaxis(im, 0, -1),
            cmap="gray" if im.shape[0] == 1 else None,
            vmin=0,
            vmax=1,
        )
        ax.set_title(t, fontsize=6)
    fig.suptitle(suptitle, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_views(
    out: Path,
    scores: np.ndarray,
    member: np.ndarray,
    index: np.ndarray,
    labels: np.ndarray,
    x: np.ndarray,
    classes: tuple[str, ...],
    title: str,
    k: int = TOP_K,
) -> dict[str, Any]:
    """Write per_class.csv, records.csv, exposed.csv and grid.png into ``out``; return the
    metrics they summarise (``per_class``, the worst class, the records caught at 0.1 % FPR,
    the top-k record indices)."""
    from privtool.artifacts import write_csv

    rows = per_class_metrics(scores, member, labels, range(len(classes)))
    for r in rows:
        r["name"] = classes[r["class"]]
    write_csv(out / "per_class.csv", rows)
    expo = exposure(scores, member)
    write_csv(
        out / "records.csv",
        [
            {
                "index": int(i),
                "label": int(y),
                "member": bool(m),
                "score": float(s),
                "exposure": float(e),
            }
            for i, y, m, s, e in zip(index, labels, member, scores, expo)
        ],
    )
    top = top_exposed(scores, member, k)
    write_csv(
        out / "exposed.csv",
        [
            {
                "rank": r + 1,
                "index": int(index[p]),
                "label": int(labels[p]),
                "score": float(scores[p]),
                "exposure": float(expo[p]),
            }
            for r, p in enumerate(top)
        ],
    )
    if len(top):
        exposed_grid(
            out / "grid.png",
            x[index[top]],
            [f"#{index[p]} {classes[labels[p]]}\nFPR {expo[p]:.2%}" for p in top],
            f"{title}: the {len(top)} most exposed training records",
        )
    scored = [r for r in rows if r["auc"] is not None]
    worst = max(scored, key=lambda r: r["auc"]) if scored else None
    return {
        "per_class": {
            str(r["class"]): {k2: r[k2] for k2 in ("n_in", "n_out", "auc", *LOW_FPRS)} for r in rows
        },
        "most_exposed_class": worst["class"] if worst else None,
        "most_exposed_class_auc": worst["auc"] if worst else None,
        "records_exposed_at_0.1pct_fpr": int(((expo < 0.001) & member).sum()),
        "records_exposed_at_1pct_fpr": int(((expo < 0.01) & member).sum()),
        "top_exposed_index": [int(index[p]) for p in top],
    }
