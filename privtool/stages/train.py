"""Stage ``train``: params -> a run directory (model.pt, accountant.json, metrics, curve)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from privtool.artifacts import ACCOUNTANT, MODEL, SPLITS, dumps, staged_dir
from privtool.config import Params
from privtool.stages.common import finish_run, load_data_and_splits, split_record, write_csv
from privtool.training import ProgressSink, resolve_device, seed_everything, train_model


def run(params: Params, out: str | Path, *, progress: ProgressSink | None = None) -> dict[str, Any]:
    """Train as ``params.train`` says on ``params.data`` and write the run to ``out``.

    Returns the metrics (also written to ``out/metrics.json``) plus ``warnings``.
    """
    import torch

    from privtool.models import build_model

    cfg = params.train
    data, splits = load_data_and_splits(params.data)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data.shape, data.n_classes)

    def tensors(idx: np.ndarray) -> tuple[Any, Any]:
        return (torch.from_numpy(data.x[idx]).to(device),
                torch.from_numpy(data.y[idx]).to(device))

    x_tr, y_tr = tensors(splits["train"])
    x_te, y_te = tensors(splits["test"])
    outcome = train_model(cfg, model, x_tr, y_tr, x_te, y_te, device=device, progress=progress)
    metrics = {"dataset": data.name, **outcome.metrics}

    with staged_dir(out) as tmp:
        torch.save({k: v.detach().cpu() for k, v in outcome.model.state_dict().items()},
                   tmp / MODEL)
        np.savez(tmp / SPLITS, **{k: v.astype(np.int64) for k, v in splits.items()})
        (tmp / ACCOUNTANT).write_text(dumps(outcome.mechanism.accountant_state(metrics["steps"])))
        extra_files = outcome.mechanism.artifacts()
        for name, array in extra_files.items():
            np.save(tmp / name, array)
        write_csv(tmp / "plots" / "curve.csv", outcome.curve)
        finish_run(tmp, stage="train", params=params.as_dict(), metrics=metrics,
                   inputs={"data": split_record(data, splits)}, device=str(device),
                   payload=[MODEL, SPLITS, ACCOUNTANT, *extra_files],
                   extra={"seconds": round(outcome.seconds, 3), "warnings": outcome.warnings})
    return {**metrics, "warnings": outcome.warnings}
