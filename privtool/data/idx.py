"""Reader for the IDX format of MNIST, Fashion-MNIST, KMNIST and QMNIST (LeCun et al. 1998).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order,
big-endian. Files may be raw, ``.gz`` or ``.xz`` (QMNIST's NIST extension).
Anything that does not parse raises :class:`PrivtoolError` naming the file.
"""

from __future__ import annotations

import gzip
import lzma
import os
import zlib
from pathlib import Path

import numpy as np

from privtool.errors import PrivtoolError

# type code -> big-endian numpy dtype (the table of the IDX spec / torchvision's SN3 map)
IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

MAGIC_IMAGES = 2051  # 0x00000803: uint8, 3 dims (MNIST images)
MAGIC_LABELS = 2049  # 0x00000801: uint8, 1 dim (MNIST labels)
MAGIC_QMNIST_LABELS = 3074  # 0x00000C02: int32, 2 dims (QMNIST's 8-column label table)

_SUFFIXES = ("", ".gz", ".xz")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        if path.suffix == ".xz":
            with lzma.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise PrivtoolError(f"IDX file {path} not found") from None
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as e:
        raise PrivtoolError(
            f"IDX file {path} is corrupt or truncated ({e}); delete it and copy or download it again"
        ) from None


def _parse_header(data: bytes, path: Path) -> tuple[int, str, tuple[int, ...], int]:
    """Return (magic, dtype, shape, header length) or raise naming ``path``."""
    if len(data) < 4:
        raise PrivtoolError(f"IDX file {path} is truncated: {len(data)} bytes, no magic number")
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or type_code not in IDX_TYPES or ndim == 0:
        raise PrivtoolError(
            f"IDX file {path} has a bad magic number {magic} (0x{magic:08X}); "
            "it is not an IDX file (expected e.g. 2051 for images, 2049 for labels)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise PrivtoolError(f"IDX file {path} is truncated inside its header ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return magic, IDX_TYPES[type_code], shape, header


def idx_magic(path: str | os.PathLike) -> int:
    """The magic number of an IDX file (2051 images, 2049 labels, 3074 QMNIST labels)."""
    path = Path(path)
    magic, _, _, _ = _parse_header(_read_bytes(path), path)
    return magic


def read_idx(path: str | os.PathLike, *, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file into a native-endian array of its declared shape.

    ``expect_magic`` (e.g. :data:`MAGIC_IMAGES`) rejects a file of the wrong kind,
    such as a labels file passed where images are expected.
    """
    path = Path(path)
    data = _read_bytes(path)
    magic, dtype, shape, header = _parse_header(data, path)
    if expect_magic is not None and magic != expect_magic:
        raise PrivtoolError(
            f"IDX file {path} has magic number {magic}, expected {expect_magic}; "
            "is it the right file (images vs labels)?"
        )
    dt = np.dtype(dtype)
    n_values = int(np.prod(shape, dtype=np.int64))
    expected = header + n_values * dt.itemsize
    if len(data) < expected:
        raise PrivtoolError(
            f"IDX file {path} is truncated: {len(data)} bytes, its header {shape} needs {expected}; "
            "delete it and copy or download it again"
        )
    if len(data) > expected:
        raise PrivtoolError(
            f"IDX file {path} has {len(data) - expected} trailing bytes after the {shape} array; "
            "it is corrupt, copy or download it again"
        )
    arr = np.frombuffer(data, dtype=dt, count=n_values, offset=header).reshape(shape)
    return arr.astype(dt.newbyteorder("="), copy=True)


def find_idx(folders: list[Path], stem: str) -> Path | None:
    """First existing ``folder/stem`` (raw, .gz or .xz) over ``folders``, else None."""
    for folder in folders:
        for suffix in _SUFFIXES:
            p = folder / (stem + suffix)
            if p.is_file():
                return p
    return None


def read_idx_pair(
    images: Path, labels: Path, *, label_column: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) int64 from an IDX images/labels pair.

    ``label_column`` picks a column of a 2-D label table (QMNIST: column 0 is the class).
    """
    x = read_idx(images, expect_magic=MAGIC_IMAGES)
    y = read_idx(labels)
    if label_column is not None:
        if y.ndim != 2:
            raise PrivtoolError(
                f"IDX labels {labels} have shape {y.shape}, expected a 2-D label table"
            )
        y = y[:, label_column]
    elif y.ndim != 1:
        raise PrivtoolError(f"IDX labels {labels} have shape {y.shape}, expected 1-D (magic 2049)")
    if len(x) != len(y):
        raise PrivtoolError(
            f"IDX pair mismatch: {images} holds {len(x)} images but {labels} holds {len(y)} labels"
        )
    return x, y.astype(np.int64)
