"""The public pool: unlabelled public images disjoint from the private data, optionally
polluted with out-of-distribution images (paper 2 §4.3). Labels stay hidden until
:meth:`PublicPool.reveal` is asked for the selected points only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from privtool.config import DataConfig, SelectConfig
from privtool.errors import PrivtoolError


@dataclass
class PublicPool:
    """Pool images ``x`` (N, C, H, W) in the private data's shape; ``polluted`` marks the
    out-of-distribution ones. ``revealed`` counts the labels handed out so far."""

    x: np.ndarray
    polluted: np.ndarray
    origin: np.ndarray  # index of each point in its source dataset
    record: dict[str, Any]
    _labels: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    revealed: int = 0

    def __len__(self) -> int:
        return len(self.x)

    @property
    def key(self) -> str:
        """A content key: sha256 of the record (datasets, fingerprints, index hashes)."""
        import hashlib
        import json

        return hashlib.sha256(
            json.dumps(self.record, sort_keys=True, default=str).encode()
        ).hexdigest()

    def reveal(self, idx: np.ndarray) -> np.ndarray:
        """The labels of the selected points (an annotator labels them; paper 2 §3)."""
        idx = np.asarray(idx, dtype=np.int64)
        self.revealed += len(idx)
        return self._labels[idx].copy()

    def pollution_fraction(self, idx: np.ndarray) -> float:
        """Fraction of the points ``idx`` that are out-of-distribution."""
        return float(self.polluted[np.asarray(idx, dtype=np.int64)].mean()) if len(idx) else 0.0


def _image_keys(x: np.ndarray) -> set[bytes]:
    from privtool.pretrain import _image_keys as keys

    return keys(x)


def _check_disjoint(x: np.ndarray, private_train: np.ndarray, what: str) -> None:
    private = _image_keys(private_train)
    overlap = sum(k in private for k in _image_keys(x))
    if overlap:
        raise PrivtoolError(
            f"{overlap} of the {len(x)} images of {what} are private training "
            f"images; the public pool must be disjoint from the private data "
            f"(use the default: select.public_dataset=null, split public)"
        )


def build_pool(
    cfg: SelectConfig, data_cfg: DataConfig, data: Any, splits: Mapping[str, np.ndarray]
) -> PublicPool:
    """The public pool for a run trained on ``data`` with ``splits`` (see
    :class:`~privtool.config.SelectConfig`). A pure function of the settings and the split
    seed, so every strategy and selection seed sees the same pool."""
    from privtool.data import data_root, index_hash, load_dataset, make_splits
    from privtool.pretrain import adapt_images

    name = cfg.public_dataset or data_cfg.dataset
    same = name == data_cfg.dataset
    split = cfg.public_split or ("public" if same else "all")
    private_train = data.x[splits["train"]]
    if same:
        if split in ("train", "all"):
            raise PrivtoolError(
                f"select.public_split={split} would label private training "
                f"records of {name}; use a split disjoint from train (public, "
                f"the default) or another dataset (select.public_dataset)"
            )
        if split not in splits:
            raise PrivtoolError(
                f"select.public_split={split!r} is not a split of {name}; valid: "
                f"{', '.join(k for k in splits if k != 'train')}"
            )
        src, idx = data, np.asarray(splits[split], dtype=np.int64)
        x, adapted = src.x[idx], None
    else:
        src = load_dataset(name, data_root(data_cfg.root))
        if src.n_classes != data.n_classes:
            raise PrivtoolError(
                f"public dataset {name} has {src.n_classes} classes and the "
                f"model {data.n_classes}; pick a public set with the same labels"
            )
        if split == "all":
            idx = np.arange(len(src.y), dtype=np.int64)
        else:
            other = make_splits(src.y, seed=data_cfg.split_seed, fractions=dict(data_cfg.splits))
            if split not in other:
                raise PrivtoolError(
                    f"select.public_split={split!r} is not a split of {name}; "
                    f"valid: all, {', '.join(other)}"
                )
            idx = other[split]
        x, adapted = adapt_images(src.x[idx], data.shape)
        _check_disjoint(x, private_train, f"public dataset {name} ({split})")
    labels = src.y[idx].astype(np.int64)
    record: dict[str, Any] = {
        "dataset": src.name,
        "fingerprint": src.fingerprint(),
        "split": split,
        "n": int(len(idx)),
        "index_sha256": index_hash(idx),
        "adapted": adapted,
        "disjoint_from": f"{data_cfg.dataset} train split",
    }
    polluted = np.zeros(len(idx), dtype=bool)
    origin = idx
    pol = cfg.pollution
    if pol.dataset is not None:
        other = load_dataset(pol.dataset, data_root(data_cfg.root))
        n_ood = int(round(pol.fraction * len(idx) / (1 - pol.fraction)))
        if n_ood > len(other.y):
            raise PrivtoolError(
                f"select.pollution.fraction={pol.fraction:g} needs {n_ood} images of "
                f"{pol.dataset} beside {len(idx)} public ones, and it has {len(other.y)}; lower "
                f"the fraction"
            )
        if n_ood < 1:
            raise PrivtoolError(
                f"select.pollution.fraction={pol.fraction:g} of {len(idx)} public "
                f"images is not one image; raise the fraction"
            )
        rng = np.random.default_rng([data_cfg.split_seed, 4243])
        pidx = np.sort(rng.choice(len(other.y), size=n_ood, replace=False)).astype(np.int64)
        px, padapted = adapt_images(other.x[pidx], data.shape)
        _check_disjoint(px, private_train, f"pollution dataset {pol.dataset}")
        # An annotator asked for a label of an out-of-distribution image returns the label it
        # carries (paper 2 §4.3 mixes CIFAR-10, labels and all, into SVHN), mapped into 0..K-1.
        x = np.concatenate([x, px])
        labels = np.concatenate([labels, other.y[pidx].astype(np.int64) % data.n_classes])
        polluted = np.concatenate([polluted, np.ones(n_ood, dtype=bool)])
        origin = np.concatenate([origin, pidx])
        record["pollution"] = {
            "dataset": other.name,
            "fingerprint": other.fingerprint(),
            "n": n_ood,
            "fraction": n_ood / len(x),
            "index_sha256": index_hash(pidx),
            "adapted": padapted,
            "labels": "the image's own label modulo n_classes",
        }
    return PublicPool(
        x=np.ascontiguousarray(x, dtype=np.float32),
        polluted=polluted,
        origin=origin,
        record=record,
        _labels=labels,
    )
