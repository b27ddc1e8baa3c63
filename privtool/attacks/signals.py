"""Per-point signals of a model's logits that both sides of a membership attack need: the
reference store computes losses when it saves signals, the attacks score them (kept here so
neither imports the other)."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Stable log-softmax over the last axis (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _take_label(a: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``a[..., i, labels[i]]`` for (..., n, C) arrays."""
    lab = np.broadcast_to(np.asarray(labels)[..., None], a.shape[:-1] + (1,))
    return np.take_along_axis(a, lab, axis=-1)[..., 0]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-point cross-entropy loss −log p_y: (..., n, C), (n,) -> (..., n)."""
    return -_take_label(log_softmax(logits), labels)


def scaled_logit(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's φ = log p_y − log(1 − p_y) = z_y − logsumexp_{j≠y} z_j, computed from logits
    without forming p (stable where p_y rounds to 1; Carlini et al. 2022 §4.2)."""
    z = np.asarray(logits, dtype=np.float64)
    zy = _take_label(z, labels)
    lab = np.broadcast_to(np.asarray(labels)[..., None], z.shape[:-1] + (1,))
    other = z.copy()
    np.put_along_axis(other, lab, -np.inf, axis=-1)
    m = other.max(axis=-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(other - m).sum(axis=-1))
    return zy - lse
