"""Accuracy versus number of labels (paper 2 Fig. 1–3): per-seed rows -> mean ± sd per
(strategy, N_labeled), and the plot (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample sd (ddof 1; 0 for one seed) of test accuracy, and of the polluted
    fraction where present, per (strategy, n_labeled), in first-seen strategy order."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["strategy"]), int(r["n_labeled"])), []).append(r)
    out = []
    for (strategy, n), rs in groups.items():
        acc = np.array([r["test_accuracy"] for r in rs], dtype=np.float64)
        row: dict[str, Any] = {
            "strategy": strategy,
            "n_labeled": n,
            "n_seeds": len(rs),
            "test_accuracy_mean": float(acc.mean()),
            "test_accuracy_sd": float(acc.std(ddof=1)) if len(rs) > 1 else 0.0,
            "epsilon": rs[0].get("epsilon"),
            "epsilon_whole_curve": rs[0].get("epsilon_whole_curve"),
            "parent_epoch": rs[0].get("parent_epoch"),
        }
        pol = [
            r["pollution_selected_fraction"]
            for r in rs
            if r.get("pollution_selected_fraction") is not None
        ]
        if pol:
            row["pollution_selected_fraction_mean"] = float(np.mean(pol))
        out.append(row)
    return out


def plot_curve(
    summary: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    baselines: Mapping[str, float],
    title: str,
) -> None:
    """Test accuracy (mean ± sd error bars) against N_labeled, one line per strategy; each
    parent's accuracy before fine-tuning as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    strategies = list(dict.fromkeys(r["strategy"] for r in summary))
    for s in strategies:
        rs = sorted((r for r in summary if r["strategy"] == s), key=lambda r: r["n_labeled"])
        eps = rs[0].get("epsilon")
        label = s + ("" if eps is None else f" (ε={eps:.3g})")
        ax.errorbar(
            [r["n_labeled"] for r in rs],
            [r["test_accuracy_mean"] for r in rs],
            yerr=[r["test_accuracy_sd"] for r in rs],
            marker="o",
            capsize=3,
            label=label,
        )
    for name, acc in baselines.items():
        ax.axhline(acc, linestyle="--", color="grey", linewidth=1)
        ax.annotate(
            name,
            (0.01, acc),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            color="grey",
            va="bottom",
        )
    ax.set_xscale("log")
    ns = sorted({r["n_labeled"] for r in summary})
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("labelled public points (N_labeled)")
    ax.set_ylabel("test accuracy after fine-tuning")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
