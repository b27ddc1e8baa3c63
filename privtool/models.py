"""Model registry: every model takes (in_shape=(C, H, W), n_classes) and is DP-compatible.

No BatchNorm anywhere (Opacus' ``ModuleValidator`` rejects it: per-sample gradients need
samples to be independent), so every registered model passes ``ModuleValidator.validate``.
Flatten sizes are found by a dry forward pass, so inputs of any size and channel count work.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from privtool.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


def _flat_size(features: nn.Module, in_shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *in_shape)).numel())


class _FeaturesHead(nn.Module):
    """``features`` (penultimate embedding) then a linear ``head``; attacks and selection
    use ``embed`` for penultimate-layer embeddings."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("lenet")
def lenet(in_shape: tuple[int, int, int], n_classes: int, activation: str = "tanh") -> nn.Module:
    """LeNet as used by DLG/Inverting Gradients and paper 1 (Zhu et al. 2019, Scheliga et al.
    2022): three 5×5 convs of 12 channels (strides 2, 2, 1), one linear layer.

    tanh by default: smooth (twice differentiable, as gradient matching needs) like DLG's
    sigmoid, but it trains in a few epochs (sigmoid LeNet stays at chance for 8 epochs on
    mnist-5k with SGD or Adam); ``lenet-sigmoid`` is DLG's exact network."""
    act = _ACTIVATIONS[activation]
    c = in_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 12, 5, padding=2, stride=2),
        act(),
        nn.Conv2d(12, 12, 5, padding=2, stride=2),
        act(),
        nn.Conv2d(12, 12, 5, padding=2, stride=1),
        act(),
        nn.Flatten(),
    )
    return _FeaturesHead(features, nn.Linear(_flat_size(features, in_shape), n_classes))


@MODELS.register("lenet-sigmoid")
def lenet_sigmoid(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """DLG's LeNet exactly (sigmoid activations)."""
    return lenet(in_shape, n_classes, activation="sigmoid")


@MODELS.register("mlp")
def mlp(in_shape: tuple[int, int, int], n_classes: int, hidden: int = 256) -> nn.Module:
    """Two-layer perceptron (paper 1 §4.3): flatten, hidden ReLU layer, linear output."""
    d = in_shape[0] * in_shape[1] * in_shape[2]
    features = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU())
    return _FeaturesHead(features, nn.Linear(hidden, n_classes))


@MODELS.register("cnn")
def cnn(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """Paper 3 §V-A: two conv layers followed by two fully connected layers."""
    c = in_shape[0]
    conv = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    features = nn.Sequential(conv, nn.Linear(_flat_size(conv, in_shape), 128), nn.ReLU())
    return _FeaturesHead(features, nn.Linear(128, n_classes))


@MODELS.register("softmax")
def softmax_regression(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """Softmax regression (paper 3 §V-B, after Fredrikson et al. 2015): one linear layer."""
    return _FeaturesHead(
        nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], n_classes)
    )


@MODELS.register("tfp-cnn")
def tf_privacy_cnn(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """The TensorFlow Privacy tutorial CNN (paper 2 §4): conv 16@8×8/2 'same', maxpool 2/1,
    conv 32@4×4/2 'valid', maxpool 2/1, dense 32, dense n_classes; tanh-free ReLU as there."""
    c = in_shape[0]
    conv = nn.Sequential(
        nn.Conv2d(c, 16, 8, stride=2, padding=3),
        nn.ReLU(),
        nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2),
        nn.ReLU(),
        nn.MaxPool2d(2, 1),
        nn.Flatten(),
    )
    features = nn.Sequential(conv, nn.Linear(_flat_size(conv, in_shape), 32), nn.ReLU())
    return _FeaturesHead(features, nn.Linear(32, n_classes))


def build_model(name: str, in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """Look ``name`` up in :data:`MODELS` and build it for inputs of ``in_shape``."""
    from privtool.errors import PrivtoolError

    ctor = MODELS.get(name)
    try:
        return ctor(tuple(in_shape), n_classes)
    except RuntimeError as e:  # e.g. a conv kernel larger than a tiny input
        raise PrivtoolError(
            f"model {name!r} cannot take inputs of shape {tuple(in_shape)}: "
            f"{str(e).splitlines()[0]}; pick another model or data.image_size"
        ) from None
