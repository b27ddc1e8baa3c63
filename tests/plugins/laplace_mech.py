"""A toy third-party mechanism, ``laplace``: the Laplace mechanism on L1-clipped per-sample
gradients (the Done-when of issue 18: one module, no edit to privtool; loaded with
``PRIVTOOL_PLUGINS=laplace_mech``).

Step: Poisson sampling (each record in the batch independently with probability q = b/n);
each per-sample gradient g_i (all trainable parameters, flattened) is clipped in L1 norm to C,
g_i · min(1, C / ‖g_i‖₁); the clipped gradients are summed and Laplace(λC) noise is added to
every coordinate; the sum is divided by the expected batch size qn (post-processing).

Relation: add/remove one record. Adding or removing one record changes the clipped sum by
one clipped gradient, of L1 norm at most C, so the sum has L1 sensitivity C and the Laplace
mechanism with scale λC is ε₀-DP with ε₀ = 1/λ (Dwork & Roth 2014, Thm. 3.6), δ = 0.

Sampling: by Poisson subsampling amplification of pure DP under add/remove one record, a step
is ε'-DP with ε' = log(1 + q(e^ε₀ − 1)) (Li, Qardaji & Su 2012, Thm. 1; Balle, Barthe &
Gaboardi 2018, Thm. 8). Steps: basic composition of T adaptively chosen ε'-DP steps is
(Tε', 0)-DP (Dwork & Roth 2014, Thm. 3.16). Sound and loose (no RDP/PLD). The sampler is
torch's, not hardened against floating-point attacks on Laplace noise (Mironov 2012): a toy.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from privtool.accounting.query import EpsilonQuery
from privtool.errors import PrivtoolError
from privtool.mechanisms import MECHANISMS, Mechanism
from privtool.mechanisms.base import Stepper
from privtool.mechanisms.release import Grads, Release, scale_rows


def step_epsilon(noise_multiplier: float, sample_rate: float) -> tuple[float, float]:
    """(ε₀, ε') of one step: Laplace(λC) on an L1-sensitivity-C sum, then Poisson(q)."""
    eps0 = 1.0 / noise_multiplier
    return eps0, math.log1p(sample_rate * math.expm1(eps0))


def laplace_epsilon(noise_multiplier: float, sample_rate: float, steps: int) -> dict[str, Any]:
    """Every ε field after ``steps`` steps (basic composition; δ = 0)."""
    eps0, amplified = step_epsilon(noise_multiplier, sample_rate)
    return {
        "epsilon": steps * amplified,
        "delta": 0.0,
        "epsilon_step": eps0,
        "epsilon_step_amplified": amplified,
    }


def solve_noise(target_epsilon: float, sample_rate: float, steps: int) -> float:
    """λ with T·ε' = ``target_epsilon`` exactly (the formulas above inverted in closed form)."""
    if steps == 0:
        raise PrivtoolError("laplace: a run of 0 steps needs no noise; give steps >= 1")
    per_step = target_epsilon / steps
    return 1.0 / math.log1p(math.expm1(per_step) / sample_rate)


def laplace_noise(shape: Any, scale: float, generator: Any, device: Any) -> torch.Tensor:
    """Laplace(scale) = scale·(E₁ − E₂), E = −log U with U uniform on (0, 1]."""
    u = 1.0 - torch.rand((2, *shape), generator=generator, device=device)
    e = -torch.log(u)
    return scale * (e[0] - e[1])


def clip_l1(grads: Grads, max_norm: float, lead: int) -> Grads:
    """Per-sample L1 clipping over all parameters (leading ``lead`` dims are per sample)."""
    l1 = sum(g.reshape(*g.shape[:lead], -1).abs().sum(-1) for g in grads)
    return scale_rows(grads, (max_norm / (l1 + 1e-6)).clamp(max=1.0))


class LaplaceRelease(Release):
    """The reconstruction threat model: L1 clip to C, sum, + Laplace(λC), / B."""

    name = "laplace"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.noise_multiplier = float(self._need("noise_multiplier"))
        self.max_grad_norm = float(self._need("max_grad_norm"))

    def release(self, grads: Grads, generator: torch.Generator | None) -> Grads:
        b = grads[0].shape[0]
        scale = self.noise_multiplier * self.max_grad_norm
        return [
            (g.sum(0) + laplace_noise(g.shape[1:], scale, generator, g.device)) / b
            for g in clip_l1(grads, self.max_grad_norm, 1)
        ]

    def expected(self, grads: Grads) -> Grads:
        return [g.mean(1) for g in clip_l1(grads, self.max_grad_norm, 2)]


@MECHANISMS.register("laplace")
class Laplace(Mechanism):
    """Laplace noise on L1-clipped per-sample gradients (module docstring: relation, sampling,
    theorems). ``train.noise_multiplier`` is λ, ``train.max_grad_norm`` the L1 bound C."""

    name = "laplace"
    relation = "add/remove one record"
    release_class = LaplaceRelease

    @classmethod
    def accountant(cls, q: EpsilonQuery) -> dict[str, Any]:
        steps = q.n_steps()
        if q.noise_multiplier is None or q.noise_multiplier <= 0:
            raise PrivtoolError("--noise-multiplier λ > 0 is required for --mech laplace")
        return {
            "mechanism": cls.name,
            "noise_multiplier": q.noise_multiplier,
            "sample_rate": q.sample_rate,
            "steps": steps,
            "composition": "basic (Dwork & Roth 2014, Thm. 3.16)",
            **laplace_epsilon(q.noise_multiplier, q.sample_rate, steps),
        }

    def calibrate(self, model: Any) -> None:
        self.noise_multiplier = float(self.cfg.noise_multiplier)
        if self.cfg.epsilon is not None:
            self.noise_multiplier = self.solve(self.cfg.epsilon)

    def solve(self, target_epsilon: float) -> float:
        return solve_noise(target_epsilon, self.schedule.sample_rate, self.schedule.steps)

    def make_stepper(self, model: nn.Module, optimizer: Any, generator: Any) -> Stepper:
        from opacus.grad_sample import GradSampleModule

        gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        params = [p for p in model.parameters() if p.requires_grad]
        c, scale = self.cfg.max_grad_norm, self.noise_multiplier * self.cfg.max_grad_norm
        expected_batch = self.schedule.sample_rate * self.schedule.n

        def step(x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
            optimizer.zero_grad(set_to_none=True)
            loss, correct = float("nan"), 0
            if len(x):
                out = gsm(x)
                total = nn.functional.cross_entropy(out, y, reduction="sum")
                total.backward()
                clipped = clip_l1([p.grad_sample for p in params], c, 1)
                sums = [g.sum(0) for g in clipped]
                loss, correct = float(total.detach()) / len(x), int((out.argmax(1) == y).sum())
                for p in params:
                    p.grad_sample = None
            else:  # an empty Poisson batch releases noise only
                sums = [torch.zeros_like(p) for p in params]
            for p, s in zip(params, sums):
                p.grad = (s + laplace_noise(p.shape, scale, generator, p.device)) / expected_batch
            optimizer.step()
            return loss, correct

        return step

    def privacy(self, steps: int) -> dict[str, Any]:
        fields = laplace_epsilon(self.noise_multiplier, self.schedule.sample_rate, steps)
        return {k: v for k, v in fields.items() if k.startswith("epsilon") or k == "delta"}

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.cfg.max_grad_norm,
            "clipping": "l1",
            "sampling": "poisson",
        }
