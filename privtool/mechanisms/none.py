"""``none``: plain (non-private) training; ε = ∞."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from privtool.accounting.query import EpsilonQuery
from privtool.mechanisms.base import MECHANISMS, Mechanism, Stepper, shuffle_batches
from privtool.mechanisms.release import Grads, Release


class RawRelease(Release):
    """Non-private training releases the plain batch-mean gradient."""

    name = "none"

    def release(self, grads: Grads, generator: torch.Generator | None) -> Grads:
        return [g.mean(0) for g in grads]

    def expected(self, grads: Grads) -> Grads:
        return [g.mean(1) for g in grads]


@MECHANISMS.register("none")
class NoPrivacy(Mechanism):
    name = "none"
    relation = "none"
    release_class = RawRelease
    is_private = False
    canaries = ("input",)
    ddp_adapter = "none"

    @classmethod
    def accountant(cls, q: EpsilonQuery) -> dict[str, Any]:
        return {"mechanism": "none", "epsilon": None}

    @classmethod
    def select_cost(
        cls, privacy: Mapping[str, Any], metrics: Mapping[str, Any], *, record_level: bool
    ) -> tuple[float | None, float, str]:
        return None, 0.0, "not private"

    @classmethod
    def label(cls, metrics: Mapping[str, Any]) -> str:
        return "none (ε=∞)"

    def batches(self, epoch: int, rng: np.random.Generator):
        return shuffle_batches(self.schedule.n, self.schedule.batch_size, rng)

    def make_stepper(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, generator: Any
    ) -> Stepper:
        loss_fn = nn.CrossEntropyLoss()

        def step(x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
            optimizer.zero_grad(set_to_none=True)
            out = model(x)
            loss = loss_fn(out, y)
            loss.backward()
            optimizer.step()
            return float(loss.detach()), int((out.argmax(1) == y).sum())

        return step

    def privacy(self, steps: int) -> dict[str, Any]:
        return {"epsilon": None, "delta": None}
