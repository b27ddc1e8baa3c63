"""The audit's picture: histograms of the in and out canary scores of one run."""

from __future__ import annotations

from typing import Any

import numpy as np


def plot_scores(path: Any, scores: np.ndarray, member: np.ndarray, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.histogram_bin_edges(scores, bins=min(60, max(10, scores.size // 20)))
    ax.hist(scores[member], bins=bins, alpha=0.6, label=f"in ({int(member.sum())})")
    ax.hist(scores[~member], bins=bins, alpha=0.6, label=f"out ({int((~member).sum())})")
    ax.set_xlabel("canary score (higher ⇒ guessed in)")
    ax.set_ylabel("canaries")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
