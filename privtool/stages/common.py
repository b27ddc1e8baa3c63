"""Pieces every stage needs: data + recorded splits, and writing a run directory."""

from __future__ import annotations

import csv
import io
import socket
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from privtool.artifacts import META, METRICS, dumps, file_hash, versions
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

    return {"dataset": data.name, "source": data.source, "fingerprint": data.fingerprint(),
            "n_examples": int(len(data.y)), "shape": list(data.shape),
            "n_classes": int(data.n_classes),
            "splits": {k: {"n": int(len(v)), "index_sha256": index_hash(v)}
                       for k, v in splits.items()}}


def write_csv(path: Path, rows: list[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    path.write_text(buf.getvalue())


def finish_run(tmp: Path, *, stage: str, params: Mapping[str, Any], metrics: Mapping[str, Any],
               inputs: Mapping[str, Any], device: str, payload: list[str],
               extra: Mapping[str, Any] | None = None) -> None:
    """Write metrics.json and meta.json (with content hashes of the payload files) into the
    staged directory ``tmp``; the caller's :func:`staged_dir` then moves it into place."""
    (tmp / METRICS).write_text(dumps(metrics))
    meta = {"stage": stage, "params": params, "inputs": inputs, "device": device,
            "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(),
            "outputs": {name: file_hash(tmp / name) for name in dict.fromkeys([METRICS, *payload])}}
    if extra:
        meta.update(extra)
    (tmp / META).write_text(dumps(meta))
