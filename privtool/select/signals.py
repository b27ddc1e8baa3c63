"""What the DP model says about a set of images: penultimate-layer embeddings (the activations
before the logits, paper 2 §3.2) and logits, plus the uncertainty scores of SelectUncertain.
Computing them is post-processing of the DP model (no ε), streamed in batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privtool.errors import PrivtoolError


@dataclass(frozen=True)
class Signals:
    embeddings: np.ndarray  # (n, d) float32, the model's ``embed`` flattened
    logits: np.ndarray  # (n, K) float32
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def model_signals(model: Any, x: np.ndarray, *, device: Any, batch_size: int = 1024) -> Signals:
    """Embeddings and logits of ``model`` (eval mode) on images ``x``, in batches."""
    import torch

    if not hasattr(model, "embed") or not hasattr(model, "head"):
        raise PrivtoolError(
            f"model {type(model).__name__} has no penultimate embedding "
            f"(.embed/.head); every registry model has one"
        )
    was = model.training
    model.eval()
    embs, logits = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)
            e = model.embed(xb)
            embs.append(e.reshape(len(xb), -1).float().cpu().numpy())
            logits.append(model.head(e).float().cpu().numpy())
    model.train(was)
    return Signals(np.concatenate(embs), np.concatenate(logits))


def uncertainty(logits: np.ndarray, kind: str) -> np.ndarray:
    """Higher = more uncertain. ``entropy``: of the softmax; ``margin``: minus the difference of
    the two largest logits (paper 2 §3.1's 'difference'; Settles 2009)."""
    z = np.asarray(logits, dtype=np.float64)
    if kind == "entropy":
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return -(np.exp(logp) * logp).sum(1)
    if kind == "margin":
        top2 = np.sort(z, axis=1)[:, -2:]
        return -(top2[:, 1] - top2[:, 0])
    raise PrivtoolError(f"select.uncertainty={kind!r} is not allowed: entropy or margin")


def most_uncertain(logits: np.ndarray, k: int, kind: str) -> np.ndarray:
    """Indices of the ``k`` most uncertain rows (SelectUncertain), most uncertain first; ties
    broken by index so the choice is deterministic."""
    score = uncertainty(logits, kind)
    order = np.lexsort((np.arange(len(score)), -score))
    return order[:k].astype(np.int64)
