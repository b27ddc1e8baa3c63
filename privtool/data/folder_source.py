"""Image-folder datasets: LFW and Faces94 under the data root, and a user's
``folder:PATH`` (ImageFolder tree) or ``npz:PATH`` (arrays x, y).

The files themselves are read by :mod:`privtool.data.folder`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privtool.data.folder import (
    image_mode,
    npz_shape,
    read_image_folder,
    read_npz,
    scan_image_folder,
)
from privtool.data.spec import (
    DatasetSpec,
    DatasetStatus,
    Found,
    ImageData,
    download_failed,
    shown_path,
)
from privtool.errors import PrivtoolError

LFW_MIN_IMAGES = 14  # paper 1 §4.2 (after Wei et al. 2020): identities with >= 14 images ...
LFW_PER_CLASS = 14  # ... undersampled to 14 each
LFW_BALANCE_SEED = 0  # fixed, so "lfw" is one dataset; run seeds vary only the splits


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
            missing = [shown_path(root, c, self.layout_hint) for c in self.candidates[:1]]
            return Found(False, None, missing)
        try:
            classes = scan_image_folder(d, leaf_classes=self.leaf_classes)
        except PrivtoolError:
            return Found(False, None, [f"{d}/{self.layout_hint}"])
        counts = [len(fs) for fs in classes.values()]
        if self.min_per_class is not None:
            counts = [n for n in counts if n >= self.min_per_class]
        if not counts:
            return Found(
                False,
                None,
                [f"{d}/{self.layout_hint} (no class with >= {self.min_per_class} images)"],
            )
        n = len(counts) * self.per_class if self.per_class else sum(counts)
        return Found(True, n, [], files={"dir": d}, n_classes=len(counts))

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
            raise download_failed(self.name, root, e) from None


def _fetch_lfw(root: Path) -> None:
    import torchvision.datasets as tvd

    tvd.LFWPeople(str(root), split="10fold", image_set="funneled", download=True)


# ------------------------------------------------------------------ user data: folder:PATH and npz:PATH


def user_path(raw: str, root: Path | None, scheme: str) -> Path:
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
            return Found(False, None, [f"{self.candidates[0]}/<class>/<image>"])
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
            return Found(False, None, [str(self.path)])
        n, _ = npz_shape(self.path)
        return Found(True, n, [])

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


# registered by privtool.data.registry
SPECS: tuple[DatasetSpec, ...] = (
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
