"""The released-gradient threat model: a batch's gradient as a mechanism would release it.

Two sides, kept apart (as in breaching, the attacker never sees the private images):

* the **victim** computes the per-sample gradients of a private batch
  (:func:`per_sample_gradients`) and releases them through the run's mechanism
  (:func:`release_gradient`), the :class:`~privtool.mechanisms.release.Release` that the
  mechanism's own module returns from ``Mechanism.release`` — e.g. raw mean (``none``),
  per-sample clip to C + sum + N(0, σ²C²) (``gaussian``; ``class``/``subclass``, where a batch
  of one record is one unit), or unit-scaled + VMF(κ) per part (``vmf``) — each divided by the
  batch size as the optimiser would;
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
from typing import Any, Callable, Iterator, Mapping

import torch

from privtool.errors import PrivtoolError
from privtool.mechanisms.release import Grads, Release


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


class _ReleaseClasses:
    """Each mechanism's ``release_class`` by name: a read-only view of the MECHANISMS
    registry, where the releases live (one module per mechanism)."""

    def get(self, mechanism: str) -> type[Release]:
        from privtool.mechanisms import MECHANISMS

        cls = MECHANISMS.get(mechanism)
        if cls.release_class is None:
            cls.release({})  # raises: no gradient release
        return cls.release_class

    def names(self) -> list[str]:
        from privtool.mechanisms import MECHANISMS

        return [m for m in MECHANISMS if MECHANISMS.get(m).release_class is not None]


RELEASES = _ReleaseClasses()


def make_release(mechanism: str, settings: Mapping[str, Any]) -> Release:
    """The :class:`Release` of ``mechanism`` (its :meth:`Mechanism.release
    <privtool.mechanisms.base.Mechanism.release>`) with the run's recorded ``settings``."""
    from privtool.mechanisms import MECHANISMS

    return MECHANISMS.get(mechanism).release(settings)


def release_gradient(
    mechanism: str,
    per_sample_grads: Grads,
    settings: Mapping[str, Any],
    generator: torch.Generator | None,
) -> Grads:
    """Victim side: release a batch's per-sample gradients (B, *shape) as ``mechanism`` with
    ``settings`` would in one training step; returns parameter-shaped tensors."""
    return make_release(mechanism, settings).release(per_sample_grads, generator)
