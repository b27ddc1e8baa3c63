"""Reader for ImageFolder trees (one sub-folder per class) and ``.npz`` image arrays.

Used for Faces94, LFW (``lfw_funneled/<person>/``) and any folder or ``.npz`` a
user brings. Images decode with Pillow: all greyscale -> C=1, otherwise RGB C=3,
uint8 -> float32 / 255 in (N, C, H, W).
"""

from __future__ import annotations

import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from privtool.errors import PrivtoolError

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".pgm",
    ".ppm",
    ".pbm",
    ".tif",
    ".tiff",
    ".gif",
    ".webp",
)
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P;L"}


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def scan_image_folder(
    path: str | os.PathLike, *, leaf_classes: bool = False
) -> dict[str, list[Path]]:
    """Map class name -> sorted image files.

    Default (torchvision ``ImageFolder``): each immediate sub-folder of ``path`` is a
    class holding every image below it. ``leaf_classes=True``: every folder that
    directly holds images is a class named by its path relative to ``path`` (so
    Faces94's original ``female/<person>/`` nesting reads as persons).
    """
    root = Path(path)
    if not root.is_dir():
        raise PrivtoolError(f"image folder {root} does not exist or is not a folder")
    classes: dict[str, list[Path]] = {}
    if leaf_classes:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            d = Path(dirpath)
            files = sorted(d / f for f in filenames if _is_image(d / f))
            if files and d != root:
                classes[d.relative_to(root).as_posix()] = files
    else:
        for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(
                Path(dp) / f
                for dp, _, fs in os.walk(d, followlinks=True)
                for f in fs
                if _is_image(Path(dp) / f)
            )
            if files:
                classes[d.name] = files
    if not classes:
        raise PrivtoolError(
            f"image folder {root} has no class sub-folders with images "
            f"({', '.join(IMAGE_EXTENSIONS)}); expected {root}/<class>/<image>"
        )
    return dict(sorted(classes.items()))


def image_mode(path: Path) -> tuple[int, int, bool]:
    """(width, height, is_greyscale) from an image's header, without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            grey = im.mode in _GREY_MODES or (im.mode == "P" and _palette_is_grey(im))
            return im.size[0], im.size[1], grey
    except (UnidentifiedImageError, OSError) as e:
        raise PrivtoolError(f"image {path} cannot be read ({e}); remove or replace it") from None


def _palette_is_grey(im) -> bool:
    pal = im.getpalette() or []
    rgb = np.asarray(pal[: len(pal) // 3 * 3]).reshape(-1, 3)
    return bool(len(rgb)) and bool(
        np.all(rgb[:, 0] == rgb[:, 1]) and np.all(rgb[:, 1] == rgb[:, 2])
    )


def _decode(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)  # antialiased when shrinking
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise PrivtoolError(f"image {path} cannot be decoded ({e}); remove or replace it") from None


def read_images(
    files: list[Path], *, image_size: int | None = None, grey: bool | None = None
) -> np.ndarray:
    """Decode ``files`` into float32 (N, C, H, W) in [0, 1].

    ``grey=None`` picks C=1 when every image is greyscale, else RGB. Without
    ``image_size`` every image must have the same size; with it each is resized
    to ``image_size`` x ``image_size``.
    """
    if not files:
        raise PrivtoolError("no image files to read")
    headers = _map(image_mode, files)
    if grey is None:
        grey = all(g for _, _, g in headers)
    if image_size is None:
        sizes = {(w, h) for w, h, _ in headers}
        if len(sizes) > 1:
            (w0, h0), (w1, h1) = sorted(sizes)[:2]
            raise PrivtoolError(
                f"images under {files[0].parent.parent} differ in size ({w0}x{h0}, {w1}x{h1}, ...); "
                "pass image_size (e.g. --set data.image_size=64) to resize them"
            )
        size = None
    else:
        size = (int(image_size), int(image_size))
    mode = "L" if grey else "RGB"
    arrays = _map(lambda f: _decode(f, mode, size), files)
    x = np.stack(arrays)
    x = x[:, None] if grey else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


def _map(fn, items: list) -> list:
    if len(items) < 64:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(
        max_workers=min(8, os.cpu_count() or 1)
    ) as pool:  # Pillow releases the GIL
        return list(pool.map(fn, items))


def read_image_folder(
    path: str | os.PathLike,
    *,
    image_size: int | None = None,
    leaf_classes: bool = False,
    min_per_class: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[Path]]:
    """Read an ImageFolder tree: (x float32 (N,C,H,W), y int64, class names, files).

    ``min_per_class`` drops classes with fewer images; ``per_class`` then keeps a
    seeded random subset of exactly that many per class (paper 1 §4.2: LFW
    identities with >= 14 images, undersampled to 14 each). Only kept files decode.
    """
    classes = scan_image_folder(path, leaf_classes=leaf_classes)
    if min_per_class is not None:
        classes = {c: fs for c, fs in classes.items() if len(fs) >= min_per_class}
        if not classes:
            raise PrivtoolError(
                f"image folder {path} has no class with at least {min_per_class} images"
            )
    if per_class is not None:
        short = [c for c, fs in classes.items() if len(fs) < per_class]
        if short:
            raise PrivtoolError(
                f"image folder {path}: class {short[0]!r} has fewer than {per_class} images"
            )
        rng = np.random.default_rng(seed)
        classes = {
            c: [fs[i] for i in np.sort(rng.choice(len(fs), per_class, replace=False))]
            for c, fs in classes.items()
        }
    names = tuple(classes)
    files = [f for fs in classes.values() for f in fs]
    y = np.concatenate(
        [np.full(len(fs), i, dtype=np.int64) for i, fs in enumerate(classes.values())]
    )
    x = read_images(files, image_size=image_size)
    return x, y, names, files


# ---------------------------------------------------------------- .npz arrays


def _npz_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of array ``key`` in an .npz, read from its header only."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            return tuple(shape), np.dtype(dtype)
    except KeyError:
        raise PrivtoolError(
            f"{path} has no array {key!r}; save it with np.savez(path, x=images, y=labels)"
        ) from None
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise PrivtoolError(f"{path} is not a readable .npz file ({e})") from None


def _channel_axis(shape: tuple[int, ...], path: Path) -> str:
    """'N' for (N,H,W), 'NCHW' or 'NHWC' for 4-D arrays with 1 or 3 channels."""
    if len(shape) == 3:
        return "N"
    if len(shape) == 4:
        first, last = shape[1] in (1, 3), shape[3] in (1, 3)
        if first and not last:
            return "NCHW"
        if last and not first:
            return "NHWC"
        if first and last and shape[1] == shape[3] == 1:
            return "NCHW"
        raise PrivtoolError(
            f"{path}: cannot tell the channel axis of x with shape {shape}; "
            "save x as (N,H,W), (N,H,W,C) or (N,C,H,W) with C = 1 or 3"
        )
    raise PrivtoolError(f"{path}: x has shape {shape}; expected (N,H,W), (N,H,W,C) or (N,C,H,W)")


def npz_shape(path: str | os.PathLike) -> tuple[int, tuple[int, int, int]]:
    """(N, (C, H, W)) of an .npz image file without loading its pixels."""
    path = Path(path)
    shape, _ = _npz_header(path, "x")
    layout = _channel_axis(shape, path)
    if layout == "N":
        return shape[0], (1, shape[1], shape[2])
    if layout == "NCHW":
        return shape[0], (shape[1], shape[2], shape[3])
    return shape[0], (shape[3], shape[1], shape[2])


def read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """x float32 (N,C,H,W) in [0,1], y int64 0..K-1 and class names from an .npz.

    ``x``: uint8 (or integer 0..255, divided by 255) or float already in [0, 1].
    ``y``: integer or string labels; mapped to 0..K-1 in sorted order unless they
    already are 0..K-1. An optional ``classes`` array names the classes of a 0..K-1 ``y``.
    """
    path = Path(path)
    if not path.is_file():
        raise PrivtoolError(f"npz file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if not {"x", "y"} <= keys:
                raise PrivtoolError(
                    f"{path} holds arrays {sorted(keys)}, needs 'x' and 'y'; "
                    "save it with np.savez(path, x=images, y=labels)"
                )
            x, y = z["x"], z["y"]
            names = z["classes"] if "classes" in keys else None
    except PrivtoolError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise PrivtoolError(
            f"{path} is not a readable .npz file ({e}); object arrays are refused"
        ) from None

    layout = _channel_axis(x.shape, path)
    if x.shape[0] == 0:
        raise PrivtoolError(f"{path}: x holds no images")
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise PrivtoolError(f"{path}: integer x must lie in 0..255, found {lo}..{hi}")
        x = x.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise PrivtoolError(f"{path}: x contains NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise PrivtoolError(
                f"{path}: float x must lie in [0, 1], found [{lo:g}, {hi:g}]; divide by 255 or save x as uint8"
            )
    else:
        raise PrivtoolError(f"{path}: x has dtype {x.dtype}; expected uint8 or float")
    if layout == "N":
        x = x[:, None]
    elif layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x)

    if y.ndim == 2 and y.shape[1] == 1:  # (N, 1) column of labels
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise PrivtoolError(
            f"{path}: y has shape {y.shape}, expected ({len(x)},) labels, one per image"
        )
    if names is not None:
        names = tuple(str(n) for n in np.asarray(names).reshape(-1))
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(names):
            raise PrivtoolError(
                f"{path}: with a 'classes' array, y must be integers in 0..{len(names) - 1}"
            )
        return x, y.astype(np.int64), names
    values, y_idx = np.unique(y, return_inverse=True)
    if np.issubdtype(y.dtype, np.integer) and np.array_equal(values, np.arange(len(values))):
        return x, y.astype(np.int64), tuple(str(v) for v in values)
    return x, y_idx.astype(np.int64).reshape(-1), tuple(str(v) for v in values)
