"""Store build: one store model from its job — train it from the recipe, compute its signals,
save it.

A *job* is one model of a store (a dict made by :func:`privtool.store.ensure.ensure_store`:
``id``, ``kind``, ``mask``/``eval`` over the store's ``points``, ``seed``, the ``recipe`` as a
TrainConfig dict, the ``pt``/``npz`` paths). This room turns a job into a TrainConfig
(:func:`job_cfg`), trains it with :func:`privtool.training.train_model` (any mechanism;
:func:`fit_job`), computes its logits and losses on every store point and writes them
(:func:`save_model`, via :mod:`privtool.store.storage`). The back ends (process pool, stacked,
Ray) call these; they decide only where and how many models train at once.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from privtool.attacks.signals import cross_entropy
from privtool.store.storage import write_model


def predict_logits(
    model: Any, x: np.ndarray, index: np.ndarray, device: Any, batch_size: int = 1024
) -> np.ndarray:
    """Logits of ``model`` on ``x[index]`` in batches (float32, (n, C))."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(index), batch_size):
            xb = torch.from_numpy(x[index[i : i + batch_size]]).to(device)
            out.append(model(xb).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def job_cfg(job: dict[str, Any], device: Any) -> Any:
    """The TrainConfig of one store model (its seed; a batch no larger than its data)."""
    from privtool.config import TrainConfig

    cfg = TrainConfig(**job["recipe"])
    n_train = int(job["mask"].sum())
    # store models are the attacker's simulations, never released: reproducible noise (resume)
    return replace(
        cfg,
        seed=job["seed"],
        device=str(device),
        noise_seed="from-seed",
        batch_size=min(cfg.batch_size, n_train),
    )


def train_job(job: dict[str, Any], data: Any, device: Any = "cpu") -> dict[str, Any]:
    """Train one store model with :func:`~privtool.training.train_model` (any mechanism),
    save it and its signals; return its record."""
    t0 = time.perf_counter()
    cfg, state, model, fit = fit_job(job, data, device)
    return save_model(job, cfg, state, model, data, device, t0, **fit)


def fit_job(job: dict[str, Any], data: Any, device: Any) -> tuple[Any, dict, Any, dict]:
    """Train one store model; return its config, CPU state_dict, model and fit summary."""
    import torch

    from privtool.models import build_model
    from privtool.training import seed_everything, train_model

    cfg = job_cfg(job, device)
    points, mask = job["points"], job["mask"]
    tr, te = points[mask], points[job["eval"]]
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data.shape, data.n_classes)

    def tensors(idx: np.ndarray) -> tuple[Any, Any]:
        return (torch.from_numpy(data.x[idx]).to(device), torch.from_numpy(data.y[idx]).to(device))

    outcome = train_model(cfg, model, *tensors(tr), *tensors(te), device=torch.device(device))
    state = {k: v.detach().cpu() for k, v in outcome.model.state_dict().items()}
    return (
        cfg,
        state,
        outcome.model,
        {"steps": outcome.metrics["steps"], "epsilon": outcome.metrics.get("epsilon")},
    )


def save_state(
    job: dict[str, Any],
    cfg: Any,
    state: dict[str, Any],
    data: Any,
    device: Any,
    seconds: float,
    **fit: Any,
) -> dict[str, Any]:
    """:func:`save_model` for weights trained elsewhere (stacked, or on a Ray worker): rebuild
    the model from ``state`` here and record the ``seconds`` its training took."""
    from privtool.models import build_model

    model = build_model(cfg.model, data.shape, data.n_classes)
    model.load_state_dict(state)
    return save_model(
        job, cfg, state, model.to(device), data, device, time.perf_counter() - seconds, **fit
    )


def save_model(
    job: dict[str, Any],
    cfg: Any,
    state: dict[str, Any],
    model: Any,
    data: Any,
    device: Any,
    t0: float,
    *,
    steps: int,
    epsilon: float | None,
    stacked: bool = False,
) -> dict[str, Any]:
    """Compute one model's signals on the store's points and write it with them
    (:func:`privtool.store.storage.write_model`); return its record."""
    points, mask = job["points"], job["mask"]
    logits = predict_logits(model, data.x, points, device)
    labels = data.y[points]
    loss = cross_entropy(logits, labels).astype(np.float32)
    right = logits.argmax(1) == labels
    record = {
        "id": job["id"],
        "kind": job["kind"],
        "seed": cfg.seed,
        "n_train": int(mask.sum()),
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "steps": int(steps),
        "train_accuracy": float(right[mask].mean()),
        "test_accuracy": float(right[job["eval"]].mean()) if job["eval"].any() else None,
        "epsilon": epsilon,
        "stacked": stacked,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_model(job, state, logits, loss, record)
    return record
