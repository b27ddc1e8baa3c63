"""Per-epoch checkpoints of a train run, each with the ε spent up to it (paper 2 §5.2, Fig. 5).

``privtool train`` keeps ``checkpoints/epoch-N.pt`` every ``train.checkpoint_every`` epochs
(and at the last epoch) and lists them in ``metrics.json: checkpoints`` with every ε field of
the mechanism after that many steps, train/test accuracy and the train–test gap. Later stages
take ``RUN_DIR@N`` (or ``--checkpoint N``) as their target and report that checkpoint's ε.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from privtool.artifacts import MODEL, inside, load_run, load_state_dict, parse_target
from privtool.errors import PrivtoolError

CHECKPOINT_DIR = "checkpoints"
# Fields of a learning-curve row that a checkpoint entry keeps besides its ε fields.
_SCORES = ("train_accuracy", "test_accuracy", "train_gap", "train_loss", "test_loss")
_KEEP = ("epoch", "step", *_SCORES)


def checkpoint_file(epoch: int) -> str:
    """Path of epoch ``epoch``'s checkpoint inside a run directory."""
    return f"{CHECKPOINT_DIR}/epoch-{epoch}.pt"


def checkpoint_epochs(every: int, epochs: int) -> list[int]:
    """Epochs that keep a checkpoint: every ``every``-th and the last; none when ``every`` is 0."""
    if every <= 0:
        return []
    return sorted({*range(every, epochs + 1, every), epochs})


def checkpoint_entry(row: Mapping[str, Any], *, delta: float | None) -> dict[str, Any]:
    """The ``metrics.json: checkpoints`` entry for a learning-curve row (one epoch)."""
    out = {k: row[k] for k in _KEEP if k in row}
    out.update({k: v for k, v in row.items() if k.startswith("epsilon")})
    if delta is not None:
        out["delta"] = delta
    out["file"] = checkpoint_file(int(row["epoch"]))
    return out


def resolve_target(target: str, checkpoint: int | None) -> str:
    """``--target RUN`` plus ``--checkpoint N`` -> ``RUN@N`` (both at once must agree)."""
    if checkpoint is None:
        return target
    run_dir, epoch = parse_target(target)
    if epoch is not None and epoch != checkpoint:
        raise PrivtoolError(
            f"--target {target} names epoch {epoch} but --checkpoint is "
            f"{checkpoint}; give one of them"
        )
    return f"{run_dir}@{checkpoint}"


def load_checkpoint(target: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``RUN_DIR`` (the final model) or ``RUN_DIR@EPOCH`` -> (state_dict, info).

    ``info`` holds that checkpoint's epoch, step, every ε field (and δ), train/test accuracy,
    train_gap, its file and the run directory. The run is verified first (meta.json hashes
    cover every checkpoint file), and the state_dict is loaded with ``weights_only=True``.
    """
    run_dir, epoch = parse_target(target)
    run = load_run(run_dir, stage="train")
    metrics = run["metrics"]
    if epoch is None:
        info = {k: metrics[k] for k in _SCORES if k in metrics}
        info.update({k: v for k, v in metrics.items() if k.startswith("epsilon")})
        if "delta" in metrics:
            info["delta"] = metrics["delta"]
        info.update(epoch=metrics.get("epochs"), step=metrics.get("steps"), file=MODEL)
    else:
        entries = list(metrics.get("checkpoints") or [])
        found = [c for c in entries if c.get("epoch") == epoch]
        if not found:
            if not entries:
                raise PrivtoolError(
                    f"{run_dir} keeps no per-epoch checkpoints (trained with "
                    f"train.checkpoint_every=0 or before checkpoints existed); use --target "
                    f"{run_dir} for the final model or re-train with "
                    f"--set train.checkpoint_every=1"
                )
            avail = ", ".join(str(c.get("epoch")) for c in entries)
            raise PrivtoolError(
                f"{run_dir} has no checkpoint at epoch {epoch}; available "
                f"epochs: {avail} (e.g. --target {run_dir}@{entries[-1]['epoch']})"
            )
        info = dict(found[0])
    info["run"] = str(run_dir)
    path = inside(Path(run_dir), info.get("file"))
    if info.get("file") not in (run["meta"].get("outputs") or {}):
        raise PrivtoolError(
            f"{path} is not covered by the hashes in {Path(run_dir) / 'meta.json'}"
            f"; re-run `privtool train --out {run_dir}`"
        )
    state = load_state_dict(path)
    return state, info
