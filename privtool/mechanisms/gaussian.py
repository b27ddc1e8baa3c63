"""``gaussian``: DP-SGD (Abadi et al. 2016; paper 1 Alg. 1) straight from Opacus.

Per-sample clipping to C, sum, N(0, σ²C²), Poisson sampling, divide by the expected batch
size. The per-sample gradient computation and the noisy optimizer are Opacus' own classes, so
the released update is Opacus' update; accounting is Opacus' RDP or PRV. The mode is
``train.grad_sample_mode``: hooks (default; fastest for the small CNNs of the papers on CPU, see
benchmarks/step_time.py), ghost (two backward passes, wins for wide layers) or functorch.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch import nn

from privtool.accounting import gaussian_epsilon, gaussian_noise_multiplier
from privtool.accounting.query import EpsilonQuery
from privtool.errors import PrivtoolError
from privtool.mechanisms.base import MECHANISMS, Mechanism, Stepper
from privtool.mechanisms.release import Grads, Release, flat_norms, scale_rows

# Opacus' hooks fire on the first layer, whose input needs no gradient; harmless.
warnings.filterwarnings("ignore", message="Full backward hook is firing")


def opacus_stepper(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    mode: str,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: int,
    generator: Any,
    optimizer_cls: type | None = None,
    **optimizer_kwargs: Any,
) -> Stepper:
    """Wrap ``model``/``optimizer`` with Opacus' grad-sample module and DP optimizer for
    ``mode`` (ghost | hooks | functorch) and return a one-step function.

    ``optimizer_cls`` replaces Opacus' DPOptimizer (mechanisms that privatize per-sample
    gradients differently subclass it); empty Poisson batches release noise only.
    """
    from opacus.grad_sample import prepare_module
    from opacus.optimizers import get_optimizer_class
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "ghost":
            module = prepare_module(
                model,
                grad_sample_mode="ghost",
                batch_first=True,
                loss_reduction="mean",
                max_grad_norm=max_grad_norm,
            )
        else:
            module = prepare_module(
                model, grad_sample_mode=mode, batch_first=True, loss_reduction="mean"
            )
    cls = optimizer_cls or get_optimizer_class(
        clipping="flat", distributed=False, grad_sample_mode=mode
    )
    dp_opt = cls(
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        loss_reduction="mean",
        generator=generator,
        **optimizer_kwargs,
    )
    criterion = nn.CrossEntropyLoss()
    if mode == "ghost":
        criterion = DPLossFastGradientClipping(module, dp_opt, criterion, "mean")

    def noise_only_step() -> None:
        # Opacus' DPDataLoader never yields an empty batch without noise; neither do we.
        std = noise_multiplier * max_grad_norm / expected_batch_size
        for p in dp_opt.params:
            p.grad = torch.normal(0.0, std, size=p.shape, device=p.device, generator=generator)
        dp_opt.original_optimizer.step()

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        dp_opt.zero_grad(set_to_none=True)
        if len(x) == 0:
            noise_only_step()
            return float("nan"), 0
        out = module(x)
        loss = criterion(out, y)
        loss.backward()
        dp_opt.step()
        return float(loss.detach()), int((out.detach().argmax(1) == y).sum())

    step.module = module  # type: ignore[attr-defined]
    step.optimizer = dp_opt  # type: ignore[attr-defined]
    return step


class GaussianRelease(Release):
    """DP-SGD (Abadi et al. 2016): flat per-sample clipping to C (Opacus' factor
    min(1, C / (‖g‖ + 1e-6))), sum, + N(0, σ²C²) per coordinate, / B."""

    name = "gaussian"
    bound_key = "max_grad_norm"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.noise_multiplier = float(self._need("noise_multiplier"))
        self.max_grad_norm = float(self._need(self.bound_key))

    def _clip(self, grads: Grads, lead: int) -> Grads:
        factor = (self.max_grad_norm / (flat_norms(grads, lead) + 1e-6)).clamp(max=1.0)
        return scale_rows(grads, factor)

    def release(self, grads: Grads, generator: torch.Generator | None) -> Grads:
        b = grads[0].shape[0]
        std = self.noise_multiplier * self.max_grad_norm
        out = []
        for g in self._clip(grads, 1):
            s = g.sum(0)
            noise = torch.normal(
                0.0, std, size=s.shape, device=s.device, dtype=s.dtype, generator=generator
            )
            out.append((s + noise) / b)
        return out

    def expected(self, grads: Grads) -> Grads:
        return [g.mean(1) for g in self._clip(grads, 2)]

    def describe(self) -> dict[str, Any]:
        return {
            "release": self.name,
            "release_noise_multiplier": self.noise_multiplier,
            "release_max_grad_norm": self.max_grad_norm,
        }


@MECHANISMS.register("gaussian")
class Gaussian(Mechanism):
    """DP-SGD under add/remove-one-record, Poisson sampling at q = b/n; ε by Opacus' RDP
    (Mironov et al. 2019, subsampled Gaussian) or PRV accountant (Gopi et al. 2021)."""

    name = "gaussian"
    relation = "add/remove one record"
    release_class = GaussianRelease
    canaries = ("input", "gradient")
    ddp_adapter = "gaussian"

    @classmethod
    def accountant(cls, q: EpsilonQuery) -> dict[str, Any]:
        n_steps = q.n_steps()
        if q.noise_multiplier is None:
            raise PrivtoolError("--noise-multiplier is required for --mech gaussian")
        res = gaussian_epsilon(
            noise_multiplier=q.noise_multiplier,
            sample_rate=q.sample_rate,
            steps=n_steps,
            delta=q.delta,
            accountant=q.accountant,
        )
        out = {
            "mechanism": "gaussian",
            "epsilon": res.epsilon,
            "delta": q.delta,
            "accountant": res.accountant,
            "noise_multiplier": q.noise_multiplier,
            "sample_rate": q.sample_rate,
            "steps": n_steps,
        }
        if res.warning:
            out["warning"] = res.warning
        return out

    def calibrate(self, model: Any) -> None:
        cfg = self.cfg
        self.noise_multiplier = cfg.noise_multiplier
        if cfg.epsilon is not None:
            self.noise_multiplier = self.solve(cfg.epsilon)
        self.warnings: list[str] = []

    def solve(self, target_epsilon: float) -> float:
        """σ for ``target_epsilon`` by the run's accountant (bisection, Opacus)."""
        s = self.schedule
        return gaussian_noise_multiplier(
            target_epsilon=target_epsilon,
            sample_rate=s.sample_rate,
            steps=s.steps,
            delta=self.cfg.delta,
            accountant=self.cfg.accountant,
        )

    def make_stepper(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, generator: Any
    ) -> Stepper:
        return opacus_stepper(
            model,
            optimizer,
            mode=self.cfg.grad_sample_mode,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.cfg.max_grad_norm,
            expected_batch_size=self.schedule.batch_size,
            generator=generator,
        )

    def privacy(self, steps: int) -> dict[str, Any]:
        if steps == 0:
            return {"epsilon": 0.0, "delta": self.cfg.delta, "accountant": self.cfg.accountant}
        res = gaussian_epsilon(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.schedule.sample_rate,
            steps=steps,
            delta=self.cfg.delta,
            accountant=self.cfg.accountant,
        )
        if res.warning and res.warning not in self.warnings:
            self.warnings.append(res.warning)
        eps = res.epsilon if res.epsilon != float("inf") else None
        return {"epsilon": eps, "delta": self.cfg.delta, "accountant": res.accountant}

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.cfg.max_grad_norm,
            "sampling": "poisson",
            "grad_sample_mode": self.cfg.grad_sample_mode,
        }
