"""Stage ``train``: params -> a run directory (model.pt, checkpoints/, accountant.json, metrics,
curve)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from privtool.artifacts import ACCOUNTANT, MODEL, SPLITS, check_out, dumps, scratch_dir, staged_dir
from privtool.config import Params
from privtool.distributed import Session, ddp_session
from privtool.release import with_split
from privtool.stages.common import finish_run, load_data_and_splits, split_record, write_csv
from privtool.training import ProgressSink, resolve_device, seed_everything, train_model


def run(params: Params, out: str | Path, *, progress: ProgressSink | None = None) -> dict[str, Any]:
    """Train as ``params.train`` says on ``params.data`` and write the run to ``out``.

    With ``params.pretrain.method`` set, the model's feature layers are first pre-trained on
    public data (:mod:`privtool.pretrain`; no ε). Every ``train.checkpoint_every`` epochs (and
    at the last) the weights go to ``checkpoints/epoch-N.pt``, listed with their ε in
    ``metrics.json: checkpoints``. Returns the metrics (also written to ``out/metrics.json``)
    plus ``warnings``.

    With ``train.distributed=ddp`` (under torchrun) every rank trains its share of each batch
    (:mod:`privtool.distributed`); only rank 0 shows progress and writes ``out``, after all
    ranks have checked they see the same data and params and have finished training.
    """
    cfg = params.train
    with ddp_session(cfg.distributed, resolve_device(cfg.device)) as (session, device):
        return _run(params, out, session, device, progress if session.leader else None)


def _run(
    params: Params, out: str | Path, session: Session, device: Any, progress: ProgressSink | None
) -> dict[str, Any]:
    import torch

    from privtool.checkpoints import checkpoint_entry, checkpoint_epochs, checkpoint_file
    from privtool.models import build_model

    cfg = params.train
    check_out(out)
    data, splits = load_data_and_splits(params.data)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data.shape, data.n_classes)
    inputs: dict[str, Any] = {"data": split_record(data, splits)}
    session.check_same("data (fingerprint, splits)", inputs["data"])
    session.check_same("config (params)", params.as_dict())
    pre = None
    if params.pretrain.method is not None:
        from privtool.pretrain import pretrain

        pre = pretrain(params, model, data, splits, device=device, progress=progress)
        inputs["pretrain"] = pre.record

    def tensors(idx: np.ndarray) -> tuple[Any, Any]:
        return (torch.from_numpy(data.x[idx]).to(device), torch.from_numpy(data.y[idx]).to(device))

    def cpu_state() -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    x_tr, y_tr = tensors(splits["train"])
    x_te, y_te = tensors(splits["test"])
    keep = set(checkpoint_epochs(cfg.checkpoint_every, cfg.epochs))
    with staged_dir(out) if session.leader else scratch_dir() as tmp:
        saved: list[str] = []

        def on_epoch(epoch: int, row: dict[str, Any]) -> None:
            if epoch in keep:
                name = checkpoint_file(epoch)
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                torch.save(cpu_state(), tmp / name)
                saved.append(name)

        outcome = train_model(
            cfg, model, x_tr, y_tr, x_te, y_te, device=device, progress=progress, on_epoch=on_epoch
        )
        warnings = [*(pre.warnings if pre else []), *outcome.warnings]
        metrics = {"dataset": data.name, **outcome.metrics, **(pre.metrics if pre else {})}
        delta = metrics.get("delta")
        metrics["checkpoint_every"] = cfg.checkpoint_every
        metrics["checkpoints"] = [
            checkpoint_entry(r, delta=delta) for r in outcome.curve if r["epoch"] in keep
        ]
        # a checkpoint's ε holds only while the later ones stay private (issue 22)
        final_eps = metrics.get(outcome.mechanism.epsilon_key)
        for c in metrics["checkpoints"]:
            c["epsilon_if_all_checkpoints_released"] = final_eps
        curve = [
            {**r, "checkpoint": checkpoint_file(r["epoch"]) if r["epoch"] in keep else None}
            for r in outcome.curve
        ]
        torch.save(cpu_state(), tmp / MODEL)
        np.savez(tmp / SPLITS, **{k: v.astype(np.int64) for k, v in splits.items()})
        (tmp / ACCOUNTANT).write_text(dumps(outcome.mechanism.accountant_state(metrics["steps"])))
        extra_files = outcome.mechanism.artifacts()
        for name, array in extra_files.items():
            np.save(tmp / name, array)
        write_csv(tmp / "plots" / "curve.csv", curve)
        metrics = with_split(metrics)
        finish_run(
            tmp,
            stage="train",
            params=params.as_dict(),
            metrics=metrics,
            inputs=inputs,
            device=str(device),
            payload=[MODEL, SPLITS, ACCOUNTANT, *extra_files, *saved],
            extra={
                "seconds": round(outcome.seconds, 3),
                "warnings": warnings,
                **({"processes": session.world} if session.active else {}),
            },
        )
        session.barrier()  # every rank trained to the end before rank 0 commits the run
    session.barrier()  # rank 0 committed; no rank exits 0 before the run is in place
    return {**metrics, "warnings": warnings}
