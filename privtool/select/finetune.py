"""Fine-tuning a DP checkpoint on the labelled public points (paper 2 §3, FineTune).

The points are public, so this is plain training without clipping or noise and the parent's
guarantee is untouched (post-processing plus public data). Runs under a forked torch RNG seeded
by the selection seed, so a fixed seed gives identical weights.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from privtool.config import FinetuneConfig


@dataclass
class FinetuneOutcome:
    model: Any
    test_accuracy: float
    test_loss: float
    curve: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@contextmanager
def single_thread_on_cpu(device: Any) -> Iterator[None]:
    """Steps on at most a few dozen images gain nothing from intra-op threads and lose much to
    their synchronisation (8x slower on a loaded 2-core CPU): run them on one thread, then
    restore torch's setting."""
    import torch

    if getattr(device, "type", str(device)) != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def finetune(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    x_test: Any,
    y_test: Any,
    *,
    cfg: FinetuneConfig,
    seed: int,
    device: Any,
    eval_batch_size: int = 1024,
    progress: Any = None,
    record_curve: bool = True,
) -> FinetuneOutcome:
    """Train ``model`` in place on (x, y) for ``cfg.epochs`` epochs, then score it on the
    private test split (``x_test``, ``y_test`` tensors on ``device``)."""
    import torch
    import torch.nn.functional as F

    from privtool.training import NullProgress, evaluate

    progress = progress or NullProgress()
    t0 = time.perf_counter()
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    batch = max(1, min(cfg.batch_size, len(xt)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (
        torch.optim.Adam(params, lr=cfg.lr)
        if cfg.optimizer == "adam"
        else torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    )
    rng = np.random.default_rng([seed, 77])
    curve: list[dict[str, Any]] = []
    devices = [device] if getattr(device, "type", str(device)) == "cuda" else []
    with torch.random.fork_rng(devices=devices), single_thread_on_cpu(device):
        torch.manual_seed(seed)
        model.to(device).train()
        progress.start(cfg.epochs, f"fine-tune on {len(xt)} labelled points")
        try:
            for epoch in range(1, cfg.epochs + 1):
                order = torch.from_numpy(rng.permutation(len(xt))).to(device)
                loss_sum = 0.0
                for i in range(0, len(xt), batch):
                    sel = order[i : i + batch]
                    loss = F.cross_entropy(model(xt.index_select(0, sel)), yt.index_select(0, sel))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += float(loss.detach()) * len(sel)
                row: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / len(xt)}
                if record_curve:
                    row["test_loss"], row["test_accuracy"] = evaluate(
                        model, x_test, y_test, eval_batch_size
                    )
                curve.append(row)
                progress.advance(epoch=epoch, loss=row["train_loss"], acc=row.get("test_accuracy"))
        finally:
            progress.stop()
        model.eval()
        test_loss, test_acc = evaluate(model, x_test, y_test, eval_batch_size)
    return FinetuneOutcome(
        model=model,
        test_accuracy=test_acc,
        test_loss=test_loss,
        curve=curve,
        seconds=time.perf_counter() - t0,
    )
