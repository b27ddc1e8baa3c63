"""A dataset with its recorded splits, as every stage loads it (SPEC §3): the data named in a
``data:`` section, its deterministic (dataset, split_seed) splits, and what meta.json records."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from privtool.config import DataConfig


def load_data_and_splits(cfg: DataConfig) -> tuple[Any, dict[str, np.ndarray]]:
    """The dataset named in ``cfg`` and its deterministic (dataset, split_seed) splits."""
    from privtool.data import data_root, load_dataset, make_splits

    data = load_dataset(cfg.dataset, data_root(cfg.root), image_size=cfg.image_size)
    splits = make_splits(data.y, seed=cfg.split_seed, fractions=dict(cfg.splits))
    return data, splits


def split_record(data: Any, splits: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """What meta.json records about the data: fingerprint and per-split index hashes."""
    from privtool.data import index_hash

    return {
        "dataset": data.name,
        "source": data.source,
        "fingerprint": data.fingerprint(),
        "n_examples": int(len(data.y)),
        "shape": list(data.shape),
        "n_classes": int(data.n_classes),
        "splits": {k: {"n": int(len(v)), "index_sha256": index_hash(v)} for k, v in splits.items()},
    }
