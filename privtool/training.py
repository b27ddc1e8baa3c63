"""The training loop shared by every mechanism.

The mechanism decides how batches are drawn and how a step is privatized; this loop only
moves data, evaluates, and records the learning curve with the ε spent so far.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from privtool.accounting.delta import check_delta
from privtool.augment import BatchAugment
from privtool.config import TrainConfig
from privtool.errors import PrivtoolError
from privtool.release import NOISE_REPRODUCIBLE, noise_generators, noise_label


class ProgressSink(Protocol):
    """What the loop reports to; the CLI implements it with a rich progress bar."""

    def start(self, total: int, description: str) -> None: ...
    def advance(self, **fields: Any) -> None: ...
    def stop(self) -> None: ...


class NullProgress:
    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, **fields: Any) -> None:
        pass

    def stop(self) -> None:
        pass


def resolve_device(name: str) -> "Any":
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PrivtoolError(
            "--device cuda was asked for but no CUDA device is available; use --device cpu or auto"
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


@dataclass
class TrainOutcome:
    model: Any
    mechanism: Any
    metrics: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def evaluate(model: Any, x: Any, y: Any, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on tensors ``x``, ``y``."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = model(x[i : i + batch_size])
            loss_sum += float(F.cross_entropy(out, y[i : i + batch_size], reduction="sum"))
            correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
    model.train(was_training)
    n = max(len(x), 1)
    return loss_sum / n, correct / n


def top_k_accuracy(model: Any, x: Any, y: Any, k: int, batch_size: int) -> float:
    """The fraction of ``y`` among ``model``'s ``k`` largest logits (k ≥ classes: 1.0)."""
    import torch

    was_training = model.training
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = model(x[i : i + batch_size])
            top = out.topk(min(k, out.shape[1]), dim=1).indices
            hits += int((top == y[i : i + batch_size, None]).any(1).sum())
    model.train(was_training)
    return hits / max(len(x), 1)


def make_optimizer(cfg: TrainConfig, params: Any) -> Any:
    import torch

    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)


def train_model(
    cfg: TrainConfig,
    model: Any,
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    device: Any,
    progress: ProgressSink | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    make_mechanism: Callable[[TrainConfig, Any], Any] | None = None,
) -> TrainOutcome:
    """Train ``model`` with ``cfg.mech`` on (x_train, y_train), evaluating each epoch.

    Tensors must already be on ``device``. Returns the trained (unwrapped) model, the
    mechanism (for its accountant) and metrics; ``curve`` has one row per epoch.
    ``make_mechanism(cfg, schedule)`` replaces the registry's mechanism class (the audit wraps
    the run's own mechanism to add gradient canaries, :mod:`privtool.audit.canaries`).
    """
    import torch

    from privtool.mechanisms import MECHANISMS, Schedule

    if cfg.threads is not None:  # small models on a loaded machine: fewer threads contend less
        torch.set_num_threads(cfg.threads)
    progress = progress or NullProgress()
    schedule = Schedule(n=len(x_train), batch_size=cfg.batch_size, epochs=cfg.epochs)
    private = MECHANISMS.get(cfg.mech).is_private  # Mechanism.is_private: ε < ∞ at all
    mech = (make_mechanism or MECHANISMS.get(cfg.mech))(cfg, schedule)
    if cfg.distributed == "ddp":  # this rank's share of every batch (privtool.distributed)
        from privtool.distributed import distribute

        mech = distribute(mech)
    model.to(device).train()
    mech.prepare(x_train, y_train)
    mech.calibrate(model)
    delta_warning = None
    if private:  # δ sanity (privtool.accounting.delta): refuse δ ≥ 1/n
        delta_warning = check_delta(cfg.delta, *mech.delta_population())
    optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    gen, rng = noise_generators(cfg, device)  # secret (os.urandom) unless noise_seed=from-seed
    step = mech.make_stepper(model, optimizer, gen)
    augment = BatchAugment.for_run(cfg, x_train, y_train)  # train.augment (privtool.augment)

    curve: list[dict[str, Any]] = []
    steps_done = 0
    eps_now: float | None = 0.0 if private else None  # shown by the progress bar
    progress.start(mech.schedule.steps, f"train {cfg.mech} {cfg.model}")
    t0 = time.perf_counter()
    try:
        for epoch in range(1, cfg.epochs + 1):
            loss_sum, seen, correct = 0.0, 0, 0
            for idx in mech.batches(epoch, rng):
                idx_t = torch.from_numpy(idx).to(device)
                xb, yb = x_train.index_select(0, idx_t), y_train.index_select(0, idx_t)
                if augment is not None:  # per-record transform before per-sample gradients
                    xb = augment(xb, idx, steps_done)
                loss, n_correct = step(xb, yb)
                steps_done += 1
                if len(idx) and math.isfinite(loss):
                    loss_sum += loss * len(idx)
                    seen += len(idx)
                    correct += n_correct
                progress.advance(
                    epoch=epoch,
                    step=steps_done,
                    loss=loss_sum / max(seen, 1),
                    acc=correct / max(seen, 1),
                    eps=eps_now,
                )
            privacy = mech.privacy(steps_done)
            eps_now = privacy.get(mech.epsilon_key)
            train_loss, train_acc = evaluate(model, x_train, y_train, cfg.eval_batch_size)
            test_loss, test_acc = evaluate(model, x_test, y_test, cfg.eval_batch_size)
            row = {
                "epoch": epoch,
                "step": steps_done,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                "train_gap": train_acc - test_acc,
                **{k: v for k, v in privacy.items() if k.startswith("epsilon")},
            }
            curve.append(row)
            progress.advance(
                epoch=epoch,
                step=steps_done,
                loss=train_loss,
                acc=test_acc,
                eps=eps_now,
                _refresh=True,
            )
            if on_epoch is not None:
                on_epoch(epoch, row)
    finally:
        progress.stop()
    elapsed = time.perf_counter() - t0

    last = curve[-1]
    privacy = mech.privacy(steps_done)
    metrics: dict[str, Any] = {
        "mechanism": cfg.mech,
        "model": cfg.model,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "steps": steps_done,
        "n_train": len(x_train),
        "n_test": len(x_test),
        "test_accuracy": last["test_accuracy"],
        "train_accuracy": last["train_accuracy"],
        "train_gap": last["train_gap"],
        "test_loss": last["test_loss"],
        "train_loss": last["train_loss"],
        **mech.settings(),
        **privacy,
        "noise": noise_label(cfg),
        "noise_seed": cfg.noise_seed,
    }
    with torch.no_grad():
        n_classes = int(model.eval()(x_test[:1]).shape[1]) if len(x_test) else 0
    if n_classes > 10:  # paper 1 reports top-10 beside top-1 for CIFAR-100 / LFW
        metrics["test_top10_accuracy"] = top_k_accuracy(
            model, x_test, y_test, 10, cfg.eval_batch_size
        )
    warnings = [
        *([delta_warning] if delta_warning else []),
        *list(getattr(mech, "warnings", []) or []),
    ]
    if metrics["noise"] == NOISE_REPRODUCIBLE:
        warnings.append(
            "train.noise_seed=from-seed: the noise and sampling follow from the "
            "recorded seed, so ε holds only while the seed stays secret; train "
            "with train.noise_seed=secret for a model to release"
        )
    return TrainOutcome(
        model=model,
        mechanism=mech,
        metrics=metrics,
        curve=curve,
        warnings=warnings,
        seconds=elapsed,
    )
