"""Load a trained run as an attack target, checking everything against its meta.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from privtool.artifacts import MODEL, SPLITS, load_run, load_state_dict, parse_target
from privtool.attacks.base import Target
from privtool.errors import PrivtoolError


def _params_from_meta(meta: dict[str, Any]) -> Any:
    from privtool.config import DataConfig, Params, TrainConfig

    p = meta.get("params") or {}
    try:
        return Params(data=DataConfig(**p["data"]), train=TrainConfig(**p["train"]), raw=p)
    except (KeyError, TypeError) as e:
        raise PrivtoolError(
            f"meta.json params are incomplete ({e}); re-run `privtool train`"
        ) from None


def load_target(spec: str | Path, device: Any) -> Target:
    """``RUN_DIR`` or ``RUN_DIR@EPOCH`` -> :class:`Target` with model weights, the same data
    and splits the run trained on (fingerprint and index hashes verified)."""
    from privtool.data import index_hash
    from privtool.data.recorded import load_data_and_splits

    run_dir, epoch = parse_target(spec)
    run = load_run(run_dir, stage="train")
    meta, metrics = run["meta"], run["metrics"]
    params = _params_from_meta(meta)
    privacy = {k: v for k, v in metrics.items() if k.startswith("epsilon") or k == "delta"}
    if epoch is None:
        state = load_state_dict(run_dir / MODEL)
    else:
        state, info = _load_epoch(run_dir, epoch)
        privacy = {k: v for k, v in info.items() if k.startswith("epsilon") or k == "delta"}
    data, _ = load_data_and_splits(params.data)
    recorded = meta.get("inputs", {}).get("data", {})
    if recorded.get("fingerprint") and recorded["fingerprint"] != data.fingerprint():
        raise PrivtoolError(
            f"dataset {data.name!r} on this machine differs from the one {run_dir} "
            f"was trained on (fingerprint mismatch); point data.root at the same "
            f"files or re-run `privtool train --out {run_dir}`"
        )
    with np.load(run_dir / SPLITS) as z:
        splits = {k: z[k] for k in z.files}
    for name, rec in (recorded.get("splits") or {}).items():
        if name not in splits or index_hash(splits[name]) != rec.get("index_sha256"):
            raise PrivtoolError(
                f"{run_dir / SPLITS} does not match the split hashes in meta.json; "
                f"re-run `privtool train --out {run_dir}`"
            )
    return Target(
        dir=run_dir,
        epoch=epoch,
        meta=meta,
        metrics=metrics,
        params=params,
        data=data,
        splits=splits,
        state_dict=state,
        device=device,
        privacy=privacy,
    )


def _load_epoch(run_dir: Path, epoch: int) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        from privtool.checkpoints import load_checkpoint  # provided by the checkpoints feature
    except ImportError:
        raise PrivtoolError(
            f"{run_dir}@{epoch}: this run has no per-epoch checkpoints; use {run_dir} without @"
        ) from None
    return load_checkpoint(f"{run_dir}@{epoch}")
