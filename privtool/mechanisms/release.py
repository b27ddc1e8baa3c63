"""The released-gradient threat model's contract: one batch's gradient as a mechanism would
release it (the reconstruction attacks, :mod:`privtool.attacks.gradients`).

Each mechanism returns its :class:`Release` from :meth:`Mechanism.release
<privtool.mechanisms.base.Mechanism.release>`; the victim side samples it (:meth:`release`),
the attacker matches its deterministic part (:meth:`expected`). Gradients are lists over the
model's trainable parameters of tensors with leading per-sample dimensions: ``(B, *shape)``
for one batch, ``(T, B, *shape)`` for T target batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

import torch

from privtool.errors import PrivtoolError

Grads = list  # list[torch.Tensor], one per trainable parameter


def flat_norms(grads: Grads, lead: int) -> torch.Tensor:
    """Per-sample L2 norm over all parameters: (*lead,) from (*lead, *shape) tensors."""
    sq = sum(g.reshape(*g.shape[:lead], -1).pow(2).sum(-1) for g in grads)
    return sq.sqrt()


def scale_rows(grads: Grads, factor: torch.Tensor) -> Grads:
    """Each per-sample gradient (leading dims of ``factor``) times its factor."""
    lead = factor.dim()
    return [g * factor.reshape(*factor.shape, *([1] * (g.dim() - lead))) for g in grads]


class Release(ABC):
    """How one mechanism releases a batch's gradient. Built from the run's recorded settings
    (``metrics.json``: noise_multiplier, max_grad_norm, kappa, partition, …)."""

    name: ClassVar[str]

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)

    def _need(self, key: str) -> Any:
        value = self.settings.get(key)
        if value is None:
            raise PrivtoolError(
                f"the target run's metrics.json has no {key!r}, which the "
                f"{self.name} gradient release needs; re-run `privtool train`"
            )
        return value

    @abstractmethod
    def release(self, grads: Grads, generator: torch.Generator | None) -> Grads:
        """Per-sample gradients (B, *shape) -> the released batch gradient (*shape): random."""

    @abstractmethod
    def expected(self, grads: Grads) -> Grads:
        """Per-sample gradients (T, B, *shape) -> the mean of each batch's release
        (T, *shape); differentiable, so the attacker can match through it."""

    def describe(self) -> dict[str, Any]:
        """The settings of this release, for metrics.json."""
        return {"release": self.name}
