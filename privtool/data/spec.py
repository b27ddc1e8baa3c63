"""The shared types of the data package (SPEC §3): what a loader returns and what a source implements.

:class:`ImageData` is every loader's result (float32 (N, C, H, W) in [0, 1], int64
labels 0..K-1); :class:`DatasetSpec` is the one interface each source module
(``bundled``, ``idx_source``, ``torchvision_source``, ``folder_source``) implements:
locate files under a data root, report status, read offline, optionally fetch with
torchvision. A failed download is undone (:meth:`DatasetSpec.load`), so nothing
half-written stays behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from privtool.errors import PrivtoolError

ENV_ROOT = "PRIVTOOL_DATA"
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


def package_version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "?"


def shown_path(root: Path | None, *parts: str) -> str:
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


def to_float(x: np.ndarray, scale: float) -> np.ndarray:
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


def download_failed(name: str, root: Path, e: Exception) -> PrivtoolError:
    return PrivtoolError(
        f"could not download {name} into {root} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
        f"check the internet connection, or copy the files by hand (`privtool data list` names them)"
    )


@dataclass(frozen=True)
class Found:
    """Result of looking for a dataset's files under a root."""

    available: bool
    n_examples: int | None
    missing: list[str]
    files: dict = field(default_factory=dict)
    note: str = ""
    n_classes: int | None = None


# ------------------------------------------------------------------ base spec


class DatasetSpec(ABC):
    """One registered dataset: locate files, report status, load, optionally download."""

    name: str = ""
    description: str = ""
    shape: tuple[int, int, int] | None = None  # (C, H, W) at default_image_size
    n_classes: int | None = None
    default_image_size: int | None = None
    downloadable: bool = False

    @abstractmethod
    def find(self, root: Path | None) -> Found:
        """Where this dataset's files are under ``root`` (or the default roots), and what is missing."""

    @abstractmethod
    def read(self, found: Found, image_size: int | None) -> ImageData:
        """The images and labels of the files :meth:`find` located."""

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
