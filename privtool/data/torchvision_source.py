"""Datasets in torchvision's own on-disk formats: CIFAR-10/100 python pickles and SVHN ``.mat``.

A root filled by torchvision's downloaders works as is; ``fetch`` calls them.
Pickles are read with an unpickler that refuses every global except numpy's array
reconstruction, so a crafted file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from privtool.data.spec import (
    DIGITS,
    DatasetSpec,
    Found,
    ImageData,
    download_failed,
    shown_path,
    to_float,
)
from privtool.errors import PrivtoolError


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts, lists, numpy arrays) and refuses any other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
    ) as e:
        raise PrivtoolError(
            f"CIFAR file {path} is corrupt or not a CIFAR python batch ({e}); copy or download it again"
        ) from None
    if not isinstance(obj, dict):
        raise PrivtoolError(
            f"CIFAR file {path} does not hold a dict; it is not a CIFAR python batch"
        )
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_batches(files: list[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) and int64 labels from CIFAR python batch files."""
    xs, ys = [], []
    for path in files:
        d = _load_pickle(path)
        if "data" not in d or label_key not in d:
            raise PrivtoolError(
                f"CIFAR file {path} lacks 'data' or {label_key!r}; is it the right CIFAR version?"
            )
        x = np.asarray(d["data"], dtype=np.uint8)
        y = np.asarray(d[label_key], dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
            raise PrivtoolError(
                f"CIFAR file {path} holds data {x.shape} and {len(y)} labels; expected (N, 3072) and N"
            )
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


class _Cifar(DatasetSpec):
    downloadable = True
    shape = (3, 32, 32)

    def __init__(
        self, name, description, folder, batches, meta, label_key, meta_key, n_classes, tv_class
    ):
        self.name, self.description, self.folder, self.batches, self.meta = (
            name,
            description,
            folder,
            batches,
            meta,
        )
        self.label_key, self.meta_key, self.n_classes, self.tv_class = (
            label_key,
            meta_key,
            n_classes,
            tv_class,
        )

    def find(self, root):
        names = [*self.batches, self.meta]
        if root is None:
            return Found(False, None, [shown_path(None, self.folder, n) for n in names])
        paths = [root / self.folder / n for n in names]
        missing = [str(p) for p in paths if not p.is_file()]
        return Found(not missing, 60000 if not missing else None, missing, files={"paths": paths})

    def read(self, found, image_size):
        *batches, meta = found.files["paths"]
        x, y = read_cifar_batches(batches, self.label_key)
        names = _load_pickle(meta).get(self.meta_key)
        if names is None or len(names) != self.n_classes:
            raise PrivtoolError(
                f"CIFAR meta file {meta} lacks {self.n_classes} {self.meta_key!r}; copy or download it again"
            )
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
        if y.min() < 0 or y.max() >= len(classes):
            raise PrivtoolError(
                f"CIFAR labels under {meta.parent} lie outside 0..{len(classes) - 1}; the files are corrupt"
            )
        return ImageData(
            to_float(x, 255.0),
            y,
            classes,
            self.name,
            f"CIFAR python batches in {meta.parent} ({len(y):,} images)",
        )

    def fetch(self, root):
        import torchvision.datasets as tvd

        try:
            getattr(tvd, self.tv_class)(str(root), train=True, download=True)
        except Exception as e:
            raise download_failed(self.name, root, e) from None


# ------------------------------------------------------------------ SVHN (.mat)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) and int64 labels (digit 0 stored as 10) from an SVHN ``*_32x32.mat``."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises assorted errors on truncated .mat files
        raise PrivtoolError(
            f"SVHN file {path} is corrupt or truncated ({e}); copy or download it again"
        ) from None
    if "X" not in mat or "y" not in mat:
        raise PrivtoolError(f"SVHN file {path} lacks arrays 'X' and 'y'; is it a *_32x32.mat file?")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).astype(np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise PrivtoolError(
            f"SVHN file {path} holds X {x.shape} and {len(y)} labels; expected (32, 32, 3, N)"
        )
    y[y == 10] = 0
    if y.min() < 0 or y.max() > 9:
        raise PrivtoolError(f"SVHN labels in {path} lie outside 1..10; the file is corrupt")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8), y


class _Svhn(DatasetSpec):
    downloadable = True
    shape = (3, 32, 32)
    n_classes = 10
    SIZES = {"train": 73257, "test": 26032, "extra": 531131}

    def __init__(self, name, description, splits):
        self.name, self.description, self.splits = name, description, splits

    def find(self, root):
        names = [f"{s}_32x32.mat" for s in self.splits]
        if root is None:
            return Found(False, None, [shown_path(None, "svhn", n) for n in names])
        paths, missing = [], []
        for n in names:
            p = next((d / n for d in (root / "svhn", root) if (d / n).is_file()), None)
            paths.append(p)
            if p is None:
                missing.append(str(root / "svhn" / n))
        ok = not missing
        return Found(
            ok,
            sum(self.SIZES[s] for s in self.splits) if ok else None,
            missing,
            files={"paths": paths},
        )

    def read(self, found, image_size):
        parts = [read_svhn_mat(p) for p in found.files["paths"]]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        files = ", ".join(str(p) for p in found.files["paths"])
        return ImageData(
            to_float(x, 255.0),
            y,
            DIGITS,
            self.name,
            f"SVHN .mat files {files} ({len(y):,} images)",
        )

    def fetch(self, root):
        import torchvision.datasets as tvd

        try:
            for s in self.splits:
                tvd.SVHN(str(root / "svhn"), split=s, download=True)
        except Exception as e:
            raise download_failed(self.name, root, e) from None


# registered by privtool.data.registry
SPECS: tuple[DatasetSpec, ...] = (
    _Cifar(
        "cifar10",
        "CIFAR-10 (Krizhevsky 2009): 50,000 train + 10,000 test",
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
        "batches.meta",
        "labels",
        "label_names",
        10,
        "CIFAR10",
    ),
    _Cifar(
        "cifar100",
        "CIFAR-100 (Krizhevsky 2009), fine labels",
        "cifar-100-python",
        ["train", "test"],
        "meta",
        "fine_labels",
        "fine_label_names",
        100,
        "CIFAR100",
    ),
    _Svhn("svhn", "SVHN house numbers (Netzer et al. 2011): train + test", ("train", "test")),
    _Svhn("svhn-extra", "SVHN train + test + extra (630,420 images)", ("train", "test", "extra")),
)
