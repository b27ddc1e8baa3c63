"""Store storage: the on-disk layout of a model store, its atomic writes and its reads.

Layout (one store per dataset × split × recipe × seed)::

    STORE/store.json              identity (dataset, fingerprint, split hashes, recipe, seed)
                                  and one record per finished model
    STORE/points.npz              the dataset indices the signals cover (sorted) and labels
    STORE/<set>/mNNNN.pt          the model (state_dict)
    STORE/<set>/mNNNN.npz         logits (P, C) on the points, loss (P,), in-mask (P,)
    STORE/<set>/signals.npz       all models stacked: logits (N, P, C), loss, in (N, P)

Each model's files are written atomically (:func:`privtool.artifacts.atomic_write_bytes`),
the ``.npz`` last: it marks the model complete, so a killed run resumes from the models already
saved. This room holds the layout, :class:`Store` (a store's signals, read back), the
``store.json`` reader/writer and the completeness check; it trains nothing.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from privtool.artifacts import atomic_write_bytes
from privtool.errors import PrivtoolError


def model_file(store_dir: Path, kind: str, m: int, suffix: str = ".npz") -> Path:
    """``STORE/<kind>/mNNNN<suffix>``: model ``m``'s signals (``.npz``) or weights (``.pt``)."""
    return store_dir / kind / f"m{m:04d}{suffix}"


@dataclass
class Store:
    """A store on disk with ``n_models`` usable models per requested set."""

    dir: Path
    identity: dict[str, Any]
    points: np.ndarray
    labels: np.ndarray
    shadow: np.ndarray
    n_models: int
    kinds: tuple[str, ...]
    trained: int = 0
    seconds: float = 0.0
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _cache: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def _signals(self, kind: str) -> dict[str, np.ndarray]:
        if kind not in self.kinds:
            raise PrivtoolError(f"store {self.dir} was not asked for its {kind} models")
        if kind not in self._cache:
            logits, loss, mask = [], [], []
            for m in range(self.n_models):
                with np.load(model_file(self.dir, kind, m)) as z:
                    logits.append(z["logits"])
                    loss.append(z["loss"])
                    mask.append(z["mask"])
            self._cache[kind] = {
                "logits": np.stack(logits),
                "loss": np.stack(loss),
                "in": np.stack(mask),
            }
        return self._cache[kind]

    def positions(self, index: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.points, index)
        pos = np.minimum(pos, len(self.points) - 1)
        if not np.array_equal(self.points[pos], index):
            raise PrivtoolError(
                f"store {self.dir} has no signals for some evaluation points; "
                f"it was built for other splits"
            )
        return pos

    def signals_for(self, index: np.ndarray, *, kind: str) -> dict[str, np.ndarray]:
        """Logits (N, n, C), loss (N, n) and in-mask (N, n) of the ``kind`` models on the
        dataset points ``index``."""
        s, pos = self._signals(kind), self.positions(np.asarray(index))
        return {"logits": s["logits"][:, pos], "loss": s["loss"][:, pos], "in": s["in"][:, pos]}

    def shadow_signals(self) -> dict[str, np.ndarray]:
        """The offline models on the shadow pool (Shokri's attack-model training data)."""
        out = self.signals_for(self.shadow, kind="offline")
        out["labels"] = self.labels[self.positions(self.shadow)]
        return out

    def describe(self) -> dict[str, Any]:
        """Store fields for an attack's metrics."""
        out: dict[str, Any] = {
            "store": str(self.dir),
            "n_models": self.n_models,
            "store_models_trained": self.trained,
        }
        for kind in self.kinds:
            rec = self.records.get(kind, [])[: self.n_models]
            for key in ("train_accuracy", "test_accuracy", "n_train"):
                vals = [r[key] for r in rec if r.get(key) is not None]
                if vals:
                    out[f"{kind}_models_{key}"] = (
                        int(np.mean(vals)) if key == "n_train" else float(np.mean(vals))
                    )
        return out


def read_meta(store_dir: Path) -> dict[str, Any] | None:
    """``store.json`` of ``store_dir`` (None when there is none; one-line error when corrupt)."""
    p = store_dir / "store.json"
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PrivtoolError(
            f"{p} is corrupt (not valid JSON); delete {store_dir} and rerun "
            f"the attack to rebuild the store"
        ) from None
    if not isinstance(meta, dict) or "identity" not in meta:
        raise PrivtoolError(f"{p} is not a privtool model store; point attack.store elsewhere")
    return meta


def model_complete(npz: Path, mask: np.ndarray, points_sha: str) -> bool:
    """Whether ``npz`` is a finished model file for this mask and these points."""
    if not npz.is_file() or not npz.with_suffix(".pt").is_file():
        return False
    try:
        with np.load(npz) as z:
            return (
                str(z["points_sha256"]) == points_sha
                and z["logits"].shape[0] == len(mask)
                and np.array_equal(z["mask"], mask)
            )
    except Exception:  # truncated or foreign file: retrain it
        return False


def meta_with(meta: dict[str, Any], store_dir: Path, kinds: tuple[str, ...]) -> dict[str, Any]:
    """store.json with a record for every complete model file on disk."""
    from privtool import __version__

    models: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        recs = []
        for f in sorted((store_dir / kind).glob("m[0-9][0-9][0-9][0-9].npz")):
            try:
                with np.load(f) as z:
                    recs.append(json.loads(str(z["record"])))
            except Exception:
                continue
        if recs:
            models[kind] = recs
    return {
        "identity": meta["identity"],
        "privtool": __version__,
        "n_models": {k: len(v) for k, v in models.items()},
        "models": models,
    }


def write_points(
    store_dir: Path, points: np.ndarray, labels: np.ndarray, shadow: np.ndarray
) -> None:
    """``STORE/points.npz`` (atomic)."""
    buf = io.BytesIO()
    np.savez(buf, points=points, labels=labels, shadow=shadow)
    atomic_write_bytes(store_dir / "points.npz", buf.getvalue())


def write_model(
    job: dict[str, Any],
    state: dict[str, Any],
    logits: np.ndarray,
    loss: np.ndarray,
    record: dict[str, Any],
) -> None:
    """Write one model's state_dict (``job["pt"]``), then its signals (``job["npz"]``, last:
    it marks the model complete), each atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(job["pt"], buf.getvalue())
    buf = io.BytesIO()
    np.savez(
        buf,
        logits=logits.astype(np.float32),
        loss=loss,
        mask=job["mask"],
        points_sha256=job["points_sha256"],
        record=json.dumps(record),
    )
    atomic_write_bytes(job["npz"], buf.getvalue())


def export_signals(store: Store, kind: str) -> None:
    """``<set>/signals.npz``: every model of the set stacked (ML Privacy Meter's layout)."""
    n = 0
    while model_file(store.dir, kind, n).is_file():
        n += 1
    s = (store if n == store.n_models else replace(store, n_models=n, _cache={}))._signals(kind)
    buf = io.BytesIO()
    np.savez_compressed(buf, points=store.points, labels=store.labels, **s)
    atomic_write_bytes(store.dir / kind / "signals.npz", buf.getvalue())
