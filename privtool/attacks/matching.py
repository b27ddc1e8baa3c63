"""What gradient reconstruction attacks optimise: the gradient-matching objectives (entries of
:data:`OBJECTIVES`, breaching's lookup table, so a new one touches no attack), the total
variation prior, and iDLG's label recovery from the output layer's gradient (paper 1 §2.4).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from privtool.attacks.gradients import Grads, parameters_of
from privtool.errors import PrivtoolError
from privtool.registry import Registry

# --------------------------------------------------------------------------- objectives

Objective = Callable[[Grads, Grads], torch.Tensor]
OBJECTIVES: Registry[Objective] = Registry("gradient-matching objective")


def _flat(grads: Grads) -> torch.Tensor:
    t = grads[0].shape[0]
    return torch.cat([g.reshape(t, -1) for g in grads], dim=1)


@OBJECTIVES.register("l2")
def l2_distance(dummy: Grads, observed: Grads) -> torch.Tensor:
    """DLG's ‖∇W' − ∇W‖² (paper 1 eq. 4), per target: (T, *shape) lists -> (T,)."""
    return sum((a - b).pow(2).reshape(a.shape[0], -1).sum(1) for a, b in zip(dummy, observed))


@OBJECTIVES.register("cosine")
def cosine_distance(dummy: Grads, observed: Grads) -> torch.Tensor:
    """Inverting Gradients' 1 − ⟨∇W', ∇W⟩ / (‖∇W'‖ ‖∇W‖) (paper 1 eq. 6), per target."""
    a, b = _flat(dummy), _flat(observed)
    return 1.0 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV as in Geiping et al.'s code: mean |vertical| + mean |horizontal|
    differences, summed over the batch: (T, B, C, H, W) -> (T,)."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((-1, -2, -3))
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean((-1, -2, -3))
    return (dy + dx).sum(1)


# --------------------------------------------------------------------------- label recovery


def _label_parameter(model: torch.nn.Module, n_classes: int) -> tuple[int, bool]:
    """Index (in trainable-parameter order) of the output layer's bias (preferred) or weight."""
    shapes = [tuple(p.shape) for p in parameters_of(model).values()]
    for i in range(len(shapes) - 1, -1, -1):
        if shapes[i] == (n_classes,):
            return i, True
    for i in range(len(shapes) - 1, -1, -1):
        if len(shapes[i]) == 2 and shapes[i][0] == n_classes:
            return i, False
    raise PrivtoolError(
        f"cannot find the output layer of model {type(model).__name__} "
        f"(no parameter of shape ({n_classes},) or ({n_classes}, h)), so the label "
        f"cannot be read off the gradient; use attack dlg"
    )


def labels_from_gradient(
    model: torch.nn.Module, observed: Grads, n_classes: int, batch_size: int
) -> torch.Tensor:
    """iDLG (Zhao et al. 2020): with cross-entropy, the output bias gradient is p_k − y_k, negative
    only at the true label (the weight rows, (p_k − y_k)·h, have the same sign pattern when
    h ≥ 0). A batch of B takes the B most negative entries (exact when its labels differ).
    ``observed`` (T, *shape) lists -> labels (T, B)."""
    i, is_bias = _label_parameter(model, n_classes)
    g = observed[i]
    score = g if is_bias else g.sum(-1)  # (T, K)
    order = torch.argsort(score, dim=1)  # most negative first
    if batch_size <= n_classes:
        return order[:, :batch_size]
    reps = math.ceil(batch_size / n_classes)
    return order.repeat(1, reps)[:, :batch_size]
