"""``train.vmf_mode``: readings of paper 1 §3.4 — how a VMF release is made from a batch.

Paper 1 gives two descriptions of DirDP-SGD that do not agree. Alg. 2 (lines 10 and 13):
"g_t(x_i) ← g_t(x_i)/‖g_t(x_i)‖₂ · C" and "g̃_t ← (1/L) Σ_i V(σ, g_t(x_i))" — every per-sample
gradient is scaled to unit norm and *replaced* by a VMF draw. §3.4, the implementation: "We
extend Opacus ... Component (i) is left unchanged. For component (ii), we cap gradients,
bounding them by C = 1 ... For component (iii), we switch the Gaussian noise for the Von
Mises-Fisher one ... the gradients are clipped per layer by Opacus ... Then, for each layer,
we add VMF noise per row." Read literally, that is Opacus' optimizer (clip, sum, *add* noise)
with its noise generator returning VMF vectors. Each entry of :data:`VMF_MODES` is one reading:

* ``alg2`` (default): Alg. 2 as written. The only mode with a DP guarantee (pure ε-DP per step
  under replace-one, :mod:`privtool.accounting.vmf`).
* ``opacus-add-unit``: clip each per-sample gradient to C (Opacus' flat clipping), sum, then add
  one C·VMF(κ, μ) vector per part, μ the direction of that part of the summed clipped gradient
  (Opacus' ``_generate_noise(std, reference=summed_grad)`` with a VMF sample of norm C).
* ``opacus-add-scaled``: as ``opacus-add-unit``, the VMF vector scaled by σ·C with σ = κ: Opacus
  multiplies its unit noise by ``noise_multiplier · max_grad_norm``, and Alg. 2's σ is the VMF
  concentration ("V(σ, g)").
* ``opacus-add-sample``: clip, then add a C·VMF(κ, μ_i) vector to *each* per-sample gradient's
  parts (μ_i that sample's direction), then sum — per-sample draws instead of one per batch.

The ``opacus-*`` modes have **no DP guarantee**: their noise is bounded (norm C or κC per part,
or ≤ B·C summed over a batch) while replacing one record moves the clipped sum by up to 2C, so
the output distributions of neighbouring batches have different supports (for one draw per
part, the output lies on a sphere about the clipped sum and two distinct spheres meet in a null
set: the distributions are mutually singular, no (ε, δ)-DP for any δ < 1). Their runs record
``epsilon: null`` and ``dp_guarantee: "none"`` with that reason, and nothing solves κ for a
target ε with them. κ is still set from paper 1's per-update ε_V (κ = ε_V / (2√m)), recorded
as ``epsilon_v_setting``: the label of paper 1's table row, not a privacy parameter.

A mode's :meth:`VMFMode.release` returns the *sum* over the batch (the optimizer divides by the
batch size, as Opacus does); :meth:`VMFMode.expected` is the mean of that sum, which the
gradient-inversion attacker matches (:mod:`privtool.attacks.gradients`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from privtool.mechanisms.vmf_sampler import sample_vmf
from privtool.registry import Registry


def _part_view(g: torch.Tensor, partition: str) -> torch.Tensor:
    """(B, *shape) per-sample gradient -> (B * parts, part_dim) rows, one per VMF part."""
    b = g.shape[0]
    if partition == "row" and g.dim() >= 3:
        return g.reshape(b * g.shape[1], -1)
    return g.reshape(b, -1)


def privatize_vmf(
    grad_samples: list[torch.Tensor],
    *,
    kappa: float,
    partition: str,
    generator: torch.Generator | None,
) -> list[torch.Tensor]:
    """Per-sample gradients (list over parameters of (B, *shape)) -> the summed VMF release
    (list of parameter-shaped tensors). A part whose gradient is exactly zero has no direction;
    it is given the fixed direction e1, which the replace-one analysis covers (any unit vector)."""
    if partition == "whole":
        b = grad_samples[0].shape[0]
        flat = torch.cat([g.reshape(b, -1) for g in grad_samples], dim=1)
        parts = [flat]
    else:
        parts = [_part_view(g, partition) for g in grad_samples]
    released = []
    for rows in parts:
        norms = rows.norm(dim=1, keepdim=True)
        unit = rows / norms.clamp_min(torch.finfo(rows.dtype).tiny)
        zero = norms.squeeze(1) == 0
        if bool(zero.any()):
            unit[zero] = 0.0
            unit[zero, 0] = 1.0
        released.append(sample_vmf(unit, kappa, generator=generator))
    if partition == "whole":
        b = grad_samples[0].shape[0]
        summed = released[0].reshape(b, -1).sum(0)
        out, offset = [], 0
        for g in grad_samples:
            k = g[0].numel()
            out.append(summed[offset : offset + k].view(g.shape[1:]))
            offset += k
        return out
    return [r.reshape(g.shape).sum(0) for r, g in zip(released, grad_samples)]


NO_GUARANTEE = (
    "bounded noise cannot hide a record: the VMF vector added to the clipped sum has "
    "norm at most {bound} per part, while replacing one record moves the sum by up "
    "to 2C, so neighbouring batches give outputs with different supports (no "
    "(epsilon, delta)-DP for any delta < 1)"
)


def part_rows(g: torch.Tensor, partition: str, lead: int) -> torch.Tensor:
    """(*lead, *shape) -> (*lead, parts, part_dim): one row per VMF part of one tensor
    (``row``: one per output row of a weight, a bias whole; ``layer``: the tensor whole)."""
    head = g.shape[:lead]
    if partition == "row" and g.dim() >= lead + 2:
        return g.reshape(*head, g.shape[lead], -1)
    return g.reshape(*head, 1, -1)


def split_parts(grads: list[torch.Tensor], partition: str, lead: int) -> list[torch.Tensor]:
    """Per-parameter tensors (*lead, *shape) -> blocks (*lead, parts, part_dim); ``whole``
    concatenates every parameter into one part."""
    if partition == "whole":
        head = grads[0].shape[:lead]
        return [torch.cat([g.reshape(*head, -1) for g in grads], dim=-1).unsqueeze(-2)]
    return [part_rows(g, partition, lead) for g in grads]


def join_parts(
    blocks: list[torch.Tensor], like: list[torch.Tensor], partition: str, lead: int
) -> list[torch.Tensor]:
    """Inverse of :func:`split_parts` for blocks (*lead', parts, d) -> tensors shaped like
    ``like`` without its first ``lead`` dims replaced by the blocks' own leading dims."""
    if partition != "whole":
        return [b.reshape(*b.shape[:-2], *g.shape[lead:]) for b, g in zip(blocks, like)]
    flat = blocks[0].squeeze(-2)
    out, offset = [], 0
    for g in like:
        k = g.shape[lead:].numel()
        out.append(flat[..., offset : offset + k].reshape(*flat.shape[:-1], *g.shape[lead:]))
        offset += k
    return out


def unit_directions(rows: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm; an all-zero row gets the fixed direction e1 (no direction to
    keep, and any unit vector is covered by the VMF analysis)."""
    norms = rows.norm(dim=-1, keepdim=True)
    unit = rows / norms.clamp_min(torch.finfo(rows.dtype).tiny)
    e1 = torch.zeros(rows.shape[-1], dtype=rows.dtype, device=rows.device)
    e1[0] = 1.0
    return torch.where(norms == 0, e1, unit)


def vmf_draw(mu: torch.Tensor, kappa: float, generator: torch.Generator | None) -> torch.Tensor:
    """One VMF(κ, μ) sample per row of ``mu`` (..., d), unit mean directions."""

    d = mu.shape[-1]
    return sample_vmf(mu.reshape(-1, d), kappa, generator=generator).reshape(mu.shape)


def flat_clip(grads: list[torch.Tensor], c: float, lead: int) -> list[torch.Tensor]:
    """Opacus' flat clipping: each sample's whole gradient times min(1, C / (‖g‖ + 1e-6))."""
    sq = sum(g.reshape(*g.shape[:lead], -1).pow(2).sum(-1) for g in grads)
    factor = (c / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    return [g * factor.reshape(*factor.shape, *([1] * (g.dim() - lead))) for g in grads]


class VMFMode(ABC):
    """One reading of paper 1's VMF step. ``guarantee``: False where the mode has no DP
    guarantee (``reason`` says why); ``paper``: the sentence of paper 1 it implements."""

    name: ClassVar[str]
    paper: ClassVar[str]
    guarantee: ClassVar[bool] = False
    clips: ClassVar[bool] = True  # uses train.max_grad_norm (Opacus' clipping)
    poisson: ClassVar[bool] = True  # Opacus' Poisson sampling (else fixed-size batches)

    def __init__(self, *, kappa: float, partition: str, max_grad_norm: float = 1.0) -> None:
        self.kappa = float(kappa)
        self.partition = partition
        self.c = float(max_grad_norm)

    def reason(self) -> str | None:
        """Why the mode has no DP guarantee (None where it has one)."""
        return None if self.guarantee else NO_GUARANTEE.format(bound=self.noise_bound())

    def noise_bound(self) -> str:
        return "C"

    @abstractmethod
    def release(
        self, grad_samples: list[torch.Tensor], generator: torch.Generator | None
    ) -> list[torch.Tensor]:
        """Per-sample gradients (B, *shape) -> the released *sum* (*shape): random."""

    @abstractmethod
    def expected(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-sample gradients (T, B, *shape) -> the mean of each batch's released sum
        divided by B (T, *shape); differentiable."""

    def _mean_length(self, d: int) -> float:
        from privtool.mechanisms.vmf_sampler import mean_resultant_length

        return mean_resultant_length(d, self.kappa)


VMF_MODES: Registry[type[VMFMode]] = Registry("train.vmf_mode")


@VMF_MODES.register("alg2")
class Alg2(VMFMode):
    name = "alg2"
    paper = (
        "Alg. 2 lines 10 and 13: g_t(x_i) ← g_t(x_i)/‖g_t(x_i)‖₂·C; g̃_t ← (1/L) Σ_i V(σ, g_t(x_i))"
    )
    guarantee = True
    clips = False
    poisson = False  # the replace-one accountant needs fixed-size batches

    def release(self, grad_samples, generator):
        return privatize_vmf(
            grad_samples, kappa=self.kappa, partition=self.partition, generator=generator
        )

    def expected(self, grads):
        blocks = split_parts(grads, self.partition, 2)
        out = [self._mean_length(b.shape[-1]) * unit_directions(b) for b in blocks]
        return [g.mean(1) for g in join_parts(out, grads, self.partition, 2)]


class OpacusAdd(VMFMode):
    """Clip (flat, to C), then add scale·VMF(κ, direction) per part: to the batch sum
    (``per_sample`` False) or to each clipped per-sample gradient before summing."""

    per_sample: ClassVar[bool] = False

    def scale(self) -> float:
        return self.c

    def noise(self, mu: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The added vectors for unit mean directions ``mu`` (..., d)."""
        return self.scale() * vmf_draw(mu, self.kappa, generator)

    def release(self, grad_samples, generator):
        clipped = flat_clip(grad_samples, self.c, 1)
        if self.per_sample:
            blocks = split_parts(clipped, self.partition, 1)
            out = [(b + self.noise(unit_directions(b), generator)).sum(0) for b in blocks]
            return join_parts(out, [g[0:1] for g in clipped], self.partition, 1)
        summed = [g.sum(0, keepdim=True) for g in clipped]
        blocks = split_parts(summed, self.partition, 1)
        out = [(b + self.noise(unit_directions(b), generator))[0] for b in blocks]
        return join_parts(out, [g[0:1] for g in clipped], self.partition, 1)

    def expected(self, grads):
        clipped = flat_clip(grads, self.c, 2)
        if self.per_sample:
            blocks = split_parts(clipped, self.partition, 2)
        else:
            blocks = split_parts([g.sum(1, keepdim=True) for g in clipped], self.partition, 2)
        out = [
            b + self.scale() * self._mean_length(b.shape[-1]) * unit_directions(b) for b in blocks
        ]
        b_size = grads[0].shape[1]
        return [g.sum(1) / b_size for g in join_parts(out, grads, self.partition, 2)]


@VMF_MODES.register("opacus-add-unit")
class OpacusAddUnit(OpacusAdd):
    name = "opacus-add-unit"
    paper = (
        '§3.4: "we cap gradients, bounding them by C = 1 ... we switch the Gaussian noise '
        'for the Von Mises-Fisher one ... for each layer, we add VMF noise per row" '
        "(clip, sum, add one C·VMF vector per part, mean direction = the summed part)"
    )


@VMF_MODES.register("opacus-add-scaled")
class OpacusAddScaled(OpacusAdd):
    name = "opacus-add-scaled"
    paper = (
        '§3.4 "we switch the Gaussian noise for the Von Mises-Fisher one" inside '
        "Opacus' noise step, whose noise is scaled by σ·C (noise_multiplier · "
        "max_grad_norm), with Alg. 2's σ the VMF concentration: V(σ, g)"
    )

    def scale(self) -> float:
        return self.kappa * self.c

    def noise_bound(self) -> str:
        return "kappa·C"


@VMF_MODES.register("opacus-add-sample")
class OpacusAddSample(OpacusAdd):
    name = "opacus-add-sample"
    paper = (
        '§3.4 "we cap gradients ... we add VMF noise per row" with the VMF centred on '
        "each sample's own gradient (one C·VMF draw per sample and part, then the sum)"
    )
    per_sample = True

    def noise_bound(self) -> str:
        return "C per sample (B·C summed)"


def make_mode(name: str, *, kappa: float, partition: str, max_grad_norm: float = 1.0) -> VMFMode:
    """The :class:`VMFMode` called ``name`` (unknown: one-line error listing the valid ones)."""
    return VMF_MODES.get(name)(kappa=kappa, partition=partition, max_grad_norm=max_grad_norm)
