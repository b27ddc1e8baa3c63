"""The released-gradient threat model: a batch's gradient as a mechanism would release it.

Two sides, kept apart (as in breaching, the attacker never sees the private images):

* the **victim** computes the per-sample gradients of a private batch
  (:func:`per_sample_gradients`) and releases them through the run's mechanism
  (:func:`release_gradient`): raw mean (``none``), per-sample clip to C + sum + N(0, σ²C²)
  (``gaussian``; ``class``/``subclass``, where a batch of one record is one unit), or
  unit-scaled + VMF(κ) per part (``vmf``, :func:`privtool.mechanisms.vmf.privatize_vmf`),
  each divided by the batch size as the optimiser would;
* the **attacker** knows the model, the mechanism and its public settings (Kerckhoffs), so it
  compares its dummy batch's gradient passed through the mechanism's deterministic part
  (:meth:`Release.expected`: the mean of the released distribution — clipped, or unit-scaled
  times A_d(κ)) with the observed release. Only the noise is unknown to it.

Gradients are lists over the model's trainable parameters, in ``named_parameters`` order, of
tensors with leading per-sample dimensions: ``(B, *shape)`` for one batch (Opacus' layout) or
``(T, B, *shape)`` for T target batches attacked at once.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Iterator, Mapping

import torch

from privtool.errors import PrivtoolError
from privtool.registry import Registry

Grads = list  # list[torch.Tensor], one per trainable parameter


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Gradient matching and inversion drive losses and gradients towards 0, where float32
    denormals make CPU arithmetic 10–20× slower (measured: IGA 28 s -> 1.2 s); flush them to
    zero for the attack's duration."""
    supported = torch.set_flush_denormal(True)  # False where the CPU has no such mode
    try:
        yield
    finally:
        if supported:  # back to PyTorch's default
            torch.set_flush_denormal(False)


def parameters_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters (detached) that gradients are taken with respect to."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise PrivtoolError(
            f"model {type(model).__name__} has no trainable parameters, so it "
            f"releases no gradient to attack; pick a run with a trainable model"
        )
    return params


def gradient_function(model: torch.nn.Module) -> Callable[..., Grads]:
    """``f(x, p)`` -> per-sample gradients of the soft-label cross-entropy
    ``-Σ_k p_k log softmax(model(x))_k`` for x of shape (*lead, C, H, W) and label
    probabilities p of shape (*lead, K): a list of (*lead, *param_shape) tensors.

    Built with ``torch.func`` (vmap over grad), so it is differentiable with respect to x and
    p (gradient matching backpropagates through it) and batched over any leading dims.
    A one-hot p is the ordinary cross-entropy of a hard label.
    """
    from torch.func import functional_call, grad, vmap

    params = parameters_of(model)
    names = list(params)

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, (x.unsqueeze(0),))[0]
        return -(prob * torch.log_softmax(logits, dim=-1)).sum()

    def per_sample(x: torch.Tensor, prob: torch.Tensor) -> Grads:
        lead = x.dim() - 3
        if lead < 1 or prob.shape[:lead] != x.shape[:lead]:
            raise PrivtoolError(
                f"gradient_function wants x (*lead, C, H, W) and p (*lead, K) "
                f"with the same leading dims, got {tuple(x.shape)} and "
                f"{tuple(prob.shape)}"
            )
        fn = grad(loss)
        for _ in range(lead):
            fn = vmap(fn, in_dims=(None, 0, 0))
        g = fn(params, x, prob)
        return [g[k] for k in names]

    return per_sample


def per_sample_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Grads:
    """Victim side: per-sample gradients (B, *shape) of the cross-entropy at the private batch
    (x (B, C, H, W), integer labels y (B,)), as Opacus' GradSampleModule computes them."""
    k = _n_classes(model, x)
    prob = torch.nn.functional.one_hot(y.long(), k).to(x.dtype)
    with torch.no_grad():
        return [g.detach() for g in gradient_function(model)(x, prob)]


def _n_classes(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[-1])


def flat_norms(grads: Grads, lead: int) -> torch.Tensor:
    """Per-sample L2 norm over all parameters: (*lead,) from (*lead, *shape) tensors."""
    sq = sum(g.reshape(*g.shape[:lead], -1).pow(2).sum(-1) for g in grads)
    return sq.sqrt()


def _scale(grads: Grads, factor: torch.Tensor) -> Grads:
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


RELEASES: Registry[type[Release]] = Registry("mechanism (gradient release)")


@RELEASES.register("none")
class RawRelease(Release):
    """Non-private training releases the plain batch-mean gradient."""

    name = "none"

    def release(self, grads: Grads, generator: torch.Generator | None) -> Grads:
        return [g.mean(0) for g in grads]

    def expected(self, grads: Grads) -> Grads:
        return [g.mean(1) for g in grads]


@RELEASES.register("gaussian")
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
        return _scale(grads, factor)

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


@RELEASES.register("class")
class UnitRelease(GaussianRelease):
    """Class/subclass DP-SGD (paper 3, Alg. 2): a unit's average gradient is clipped to S and
    released with N(0, σ²S²). A batch of one record is one unit, so for the attacker this is
    the Gaussian release with S = ``max_grad_norm``."""

    name = "class"


RELEASES.add("subclass", UnitRelease)


@RELEASES.register("vmf")
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


def make_release(mechanism: str, settings: Mapping[str, Any]) -> Release:
    """The :class:`Release` of ``mechanism`` with the run's recorded ``settings``."""
    return RELEASES.get(mechanism)(settings)


def release_gradient(
    mechanism: str,
    per_sample_grads: Grads,
    settings: Mapping[str, Any],
    generator: torch.Generator | None,
) -> Grads:
    """Victim side: release a batch's per-sample gradients (B, *shape) as ``mechanism`` with
    ``settings`` would in one training step; returns parameter-shaped tensors."""
    return make_release(mechanism, settings).release(per_sample_grads, generator)
