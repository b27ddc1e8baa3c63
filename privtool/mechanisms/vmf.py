"""``vmf``: DirDP-SGD (paper 1, Alg. 2) with sound accounting.

Each per-sample gradient is split into parts (``whole``: one part; ``layer``: one per
parameter tensor; ``row``: one per output row of each weight, one per bias), each part is
scaled to unit norm (scaled, not clipped: paper 1 Alg. 2 line 10) and replaced by a sample of
VMF(κ, that direction); the samples are summed and divided by the fixed batch size.

Batches have a fixed size b drawn uniformly without replacement (the VMF sum is not DP under
add/remove, see :mod:`privtool.accounting.vmf`), so the replace-one accountant applies.
Per-sample gradients come from Opacus' GradSampleModule; this module only replaces the
"clip, sum, add noise" part of Opacus' DPOptimizer. ``train.vmf_mode`` picks how
(:mod:`privtool.mechanisms.vmf_modes`): ``alg2`` (default) is the above; the ``opacus-*`` modes
are readings of paper 1 §3.4 with no DP guarantee (their runs record ``epsilon: null``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from privtool.accounting import (
    kappa_from_nominal,
    vmf_epsilon,
    vmf_nominal_epsilon,
    vmf_solve_kappa,
)
from privtool.accounting.query import EpsilonQuery
from privtool.errors import PrivtoolError
from privtool.mechanisms.base import (
    MECHANISMS,
    REPLACE_ONE,
    Mechanism,
    Stepper,
    fixed_size_batches,
)
from privtool.mechanisms.gaussian import opacus_stepper
from privtool.mechanisms.release import Grads, Release
from privtool.mechanisms.vmf_modes import VMF_MODES, VMFMode, make_mode, privatize_vmf  # noqa: F401


def count_parts(params: list[torch.Tensor], partition: str) -> int:
    """Number m of VMF parts per per-sample gradient for ``partition``."""
    return len(part_dims(params, partition))


def part_dims(params: list[torch.Tensor] | list[torch.Size], partition: str) -> list[int]:
    """Dimension of every VMF part for ``partition`` (what :func:`~privtool.mechanisms.vmf_modes.privatize_vmf` cuts): ``whole``
    one part of all parameters; ``layer`` one per tensor; ``row`` one per output row of each
    weight (dimension: the rest of its shape), one per bias. The tight accountant needs them."""
    shapes = [tuple(p.shape) if hasattr(p, "shape") else tuple(p) for p in params]
    sizes = [int(np.prod(s)) for s in shapes]
    if partition == "whole":
        return [sum(sizes)]
    if partition == "layer":
        return sizes
    return [d for s, n in zip(shapes, sizes) for d in ([n // s[0]] * s[0] if len(s) >= 2 else [n])]


def _vmf_optimizer_class() -> type:
    from opacus.optimizers import DPOptimizer
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    class VMFOptimizer(DPOptimizer):
        """Opacus' DPOptimizer with "clip + sum + Gaussian" replaced by "scale to unit +
        VMF sample + sum" (paper 1 Alg. 2 lines 10 and 13)."""

        def __init__(
            self, optimizer: torch.optim.Optimizer, *, vmf_mode: VMFMode, **kwargs: Any
        ) -> None:
            super().__init__(optimizer, **kwargs)
            self.mode = vmf_mode

        def clip_and_accumulate(self) -> None:
            grad_samples = []
            for p in self.params:
                _check_processed_flag(p.grad_sample)
                grad_samples.append(self._get_flat_grad_sample(p).to(p.dtype))
            summed = self.mode.release(grad_samples, self.generator)
            for p, s in zip(self.params, summed):
                p.summed_grad = s if p.summed_grad is None else p.summed_grad + s
                _mark_as_processed(p.grad_sample)

        def add_noise(self) -> None:
            for p in self.params:
                _check_processed_flag(p.summed_grad)
                p.grad = p.summed_grad.view_as(p)
                _mark_as_processed(p.summed_grad)

    return VMFOptimizer


class VMFRelease(Release):
    """DirDP-SGD (paper 1): the run's ``vmf_mode`` (:mod:`privtool.mechanisms.vmf_modes`)
    releases the batch sum, / B. ``alg2``: each part of each per-sample gradient scaled to unit
    norm and replaced by a VMF(κ, direction) sample, whose mean A_d(κ)·direction (d the part's
    dimension) the attacker matches; the ``opacus-*`` modes: clipped sum + VMF noise, mean
    clipped sum + scale·A_d(κ)·direction."""

    name = "vmf"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        from privtool.mechanisms.vmf_modes import make_mode

        super().__init__(settings)
        self.kappa = float(self._need("kappa"))
        self.partition = str(self.settings.get("partition") or "whole")
        self.mode = make_mode(
            str(self.settings.get("vmf_mode") or "alg2"),
            kappa=self.kappa,
            partition=self.partition,
            max_grad_norm=float(self.settings.get("max_grad_norm") or 1.0),
        )

    def release(self, grads: Grads, generator: torch.Generator | None) -> Grads:
        b = grads[0].shape[0]
        return [s / b for s in self.mode.release(grads, generator)]

    def expected(self, grads: Grads) -> Grads:
        return self.mode.expected(grads)

    def describe(self) -> dict[str, Any]:
        return {
            "release": self.name,
            "release_kappa": self.kappa,
            "release_partition": self.partition,
            "release_vmf_mode": self.mode.name,
        }


@MECHANISMS.register("vmf")
class VMF(Mechanism):
    """DirDP-SGD (module docstring): replace-one-record, fixed-size batches without
    replacement; ε by :mod:`privtool.accounting.vmf` (tight PLD with the parts' dimensions,
    else the pure bound)."""

    name = "vmf"
    relation = REPLACE_ONE
    release_class = VMFRelease
    record_relation = REPLACE_ONE
    uses_part_dims = True
    nominal_key = "epsilon_v_nominal"  # paper 1 quotes VMF by its per-update ε_V
    canaries = ("input", "gradient")
    ddp_adapter = "vmf"

    @classmethod
    def accountant(cls, q: EpsilonQuery) -> dict[str, Any]:
        n_steps = q.n_steps()
        mode = make_mode(q.vmf_mode, kappa=0.0, partition="whole")
        if not mode.guarantee:
            raise PrivtoolError(
                f"--vmf-mode {q.vmf_mode} has no DP guarantee, so it has no "
                f"epsilon ({mode.reason()}); only alg2 is accounted"
            )
        if q.kappa is None:
            raise PrivtoolError("--kappa is required for --mech vmf")
        part_dims = None if q.part_dims is None else list(q.part_dims)
        fields = vmf_epsilon(
            kappa=q.kappa,
            parts=q.parts if part_dims is None else len(part_dims),
            sample_rate=q.sample_rate,
            steps=n_steps,
            delta=q.delta,
            part_dims=part_dims,
        )
        out = {"mechanism": "vmf", **fields}
        if part_dims is None:
            out["note"] = (
                "only the pure bound: without the parts' dimensions (--part-dims, or "
                "--model and --partition) the tight PLD accountant cannot run"
            )
        else:
            from privtool.accounting.vmf_pld import format_part_dims

            out["part_dims"] = format_part_dims(part_dims)
        return out

    @classmethod
    def label(cls, metrics: Mapping[str, Any]) -> str:
        if metrics.get("target_epsilon_v_nominal") is not None:
            return f"vmf ε_V={metrics['target_epsilon_v_nominal']:.3g}"
        return super().label(metrics)

    def batches(self, epoch: int, rng: np.random.Generator):
        s = self.schedule
        # the sampling is the mode's class attribute, known before calibrate() solves κ
        if VMF_MODES.get(self.cfg.vmf_mode).poisson:  # Opacus' sampling, "left unchanged" (§3.4)
            return super().batches(epoch, rng)
        return fixed_size_batches(s.n, s.batch_size, s.steps_per_epoch, rng)

    def calibrate(self, model: nn.Module) -> None:
        cfg = self.cfg
        params = [p for p in model.parameters() if p.requires_grad]
        self.part_dims = part_dims(params, cfg.partition)
        self.parts = len(self.part_dims)
        self.pld_grid = None
        probe = make_mode(cfg.vmf_mode, kappa=0.0, partition=cfg.partition)
        if cfg.epsilon is not None and not probe.guarantee:
            raise PrivtoolError(
                f"train.vmf_mode={cfg.vmf_mode} has no DP guarantee, so no κ "
                f"meets an ε target; drop --epsilon and set the noise with "
                f"--set train.epsilon_v=E or --set train.kappa=K"
            )
        if cfg.epsilon is not None and cfg.kappa is not None:
            raise PrivtoolError(
                "vmf noise is set twice (train.epsilon and train.kappa); give only one of them"
            )
        # Precedence: a whole-run ε target, then κ, then paper 1's per-update ε_V (the default).
        if cfg.epsilon is not None:
            self.kappa = self.solve(cfg.epsilon)
        elif cfg.kappa is not None:
            self.kappa = float(cfg.kappa)
        elif cfg.epsilon_v is not None:
            self.kappa = kappa_from_nominal(epsilon_v=cfg.epsilon_v, parts=self.parts)
        else:
            raise PrivtoolError(
                "vmf needs its noise level: set --epsilon E (whole-run target), "
                "--set train.kappa=K or --set train.epsilon_v=E (paper 1's "
                "per-update ε_V)"
            )
        self.mode = make_mode(
            cfg.vmf_mode, kappa=self.kappa, partition=cfg.partition, max_grad_norm=cfg.max_grad_norm
        )

    def solve(self, target_epsilon: float) -> float:
        """κ for ``target_epsilon`` against the tight ε; the grid of the solve is kept so
        :meth:`privacy` reports that ε."""
        s = self.schedule
        kappa, self.pld_grid = vmf_solve_kappa(
            target_epsilon=target_epsilon,
            parts=self.parts,
            sample_rate=s.sample_rate,
            steps=s.steps,
            delta=self.cfg.delta,
            part_dims=self.part_dims,
        )
        return kappa

    def make_stepper(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, generator: Any
    ) -> Stepper:
        mode = "hooks" if self.cfg.grad_sample_mode == "ghost" else self.cfg.grad_sample_mode
        return opacus_stepper(
            model,
            optimizer,
            mode=mode,
            noise_multiplier=0.0,
            max_grad_norm=1.0,
            expected_batch_size=self.schedule.batch_size,
            generator=generator,
            optimizer_cls=_vmf_optimizer_class(),
            vmf_mode=self.mode,
        )

    def privacy(self, steps: int) -> dict[str, Any]:
        s = self.schedule
        if not self.mode.guarantee:  # no accountant applies: ε is ∞, recorded as null
            return {
                "epsilon": None,
                "epsilon_v_setting": vmf_nominal_epsilon(kappa=self.kappa, parts=self.parts),
            }
        fields = vmf_epsilon(
            kappa=self.kappa,
            parts=self.parts,
            sample_rate=s.sample_rate,
            steps=steps,
            delta=self.cfg.delta,
            part_dims=self.part_dims,
            pld_grid=self.pld_grid,
        )
        out = {
            k: v for k, v in fields.items() if k not in ("kappa", "parts", "sample_rate", "steps")
        }
        out["epsilon_v_nominal"] = vmf_nominal_epsilon(kappa=self.kappa, parts=self.parts)
        return out

    def settings(self) -> dict[str, Any]:
        from privtool.accounting.vmf_pld import format_part_dims

        out = {
            **super().settings(),
            "kappa": self.kappa,
            "parts": self.parts,
            "part_dims": format_part_dims(self.part_dims),
            "partition": self.cfg.partition,
            "vmf_mode": self.mode.name,
            "sampling": "poisson" if self.mode.poisson else "fixed-size without replacement",
        }
        if self.mode.clips:
            out["max_grad_norm"] = self.cfg.max_grad_norm
        if not self.mode.guarantee:
            out.update(dp_guarantee="none", dp_guarantee_reason=self.mode.reason())
        return out
