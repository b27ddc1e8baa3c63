"""``none``: plain (non-private) training; ε = ∞."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from privtool.mechanisms.base import MECHANISMS, Mechanism, Stepper, shuffle_batches


@MECHANISMS.register("none")
class NoPrivacy(Mechanism):
    name = "none"
    relation = "none"

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
