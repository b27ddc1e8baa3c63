"""Store back end "stacked": train many small non-private store models at once (SPEC §9: on a
GPU, reference models train together instead of one by one).

:func:`stack_groups` picks the jobs that may train together (non-private recipes of one set,
up to ``MAX_STACK``), :func:`train_stacked_jobs` trains one such group and saves each model
(:mod:`privtool.store.build`); :func:`train_stacked` is the stacked training itself.

The N models' parameters are stacked along a new leading axis (``torch.func.
stack_module_state``) and one ``vmap``-ed ``functional_call`` runs all N forward passes as
one batched computation; the summed loss gives every model its own gradient (the models share
no parameter). The run reproduces :func:`privtool.training.train_model` with ``mech: none``
model by model: the same initialisation (``seed_everything(seed)`` then the constructor), the
same batches (``default_rng(seed + 1)``, one permutation per epoch cut into ``batch_size``
pieces), the same loss (batch-mean cross-entropy) and PyTorch's SGD-with-momentum / Adam update
rules, so a stacked model equals its one-by-one twin up to floating-point reordering: in
float64 to 1e-9 after 30 epochs; in float32 vmap's batched matmuls/convolutions round in
another order (~1e-7 relative per step, also between stacks of different sizes for convolutions)
and SGD amplifies it over training — max |logit| gaps of ~4e-6 (LeNet, 8 epochs, lr 0.5) to
~5e-3 and more (overfit MLP, 30 epochs). Not bitwise equal, so a store's models depend (at that
level) on whether they trained stacked; tests/test_membership.py bounds both cases.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import numpy as np

from privtool.mechanisms.base import is_private
from privtool.store.build import job_cfg, save_state

MAX_STACK = 32  # models trained together in one stacked (vmap) run


def train_stacked(
    cfg: Any,
    seeds: list[int],
    train_sets: list[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, ...],
    n_classes: int,
    device: Any,
    on_epoch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``len(seeds)`` copies of ``cfg.model`` without privacy, copy ``m`` on the dataset
    points ``train_sets[m]`` with seed ``seeds[m]``; return their state_dicts (on CPU).

    ``cfg`` is a :class:`~privtool.config.TrainConfig` with ``mech: none``; its ``batch_size``
    must not exceed any training set.
    """
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state, vmap

    from privtool.augment import BatchAugment, record_keys
    from privtool.mechanisms.base import shuffle_batches
    from privtool.models import build_model
    from privtool.training import seed_everything

    if is_private(cfg.mech):
        raise ValueError("stacked training reproduces non-private training only")
    n = len(seeds)
    b = cfg.batch_size
    if any(len(t) < b for t in train_sets):
        raise ValueError("batch_size exceeds a training set")
    models = []
    for s in seeds:
        seed_everything(s)
        models.append(build_model(cfg.model, shape, n_classes))
    params, buffers = stack_module_state(models)
    params = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}
    buffers = {k: v.to(device) for k, v in buffers.items()}
    base = copy.deepcopy(models[0]).to("meta")
    forward = vmap(lambda p, bu, xb: functional_call(base, (p, bu), (xb,)))
    state = _Optimizer(cfg, params, n)

    x_dev = torch.from_numpy(x).to(device)
    y_dev = torch.from_numpy(y).to(device)
    rngs = [np.random.default_rng(s + 1) for s in seeds]
    # train.augment: each model's records transformed as train_model would (privtool.augment)
    keys = record_keys(x, y) if cfg.augment != "none" else None
    augs = [BatchAugment.for_keys(cfg, shape, s, keys) for s in seeds] if keys is not None else []
    done = np.zeros(n, dtype=np.int64)  # each model's steps so far (train_model's steps_done)
    for epoch in range(1, cfg.epochs + 1):
        plans = [list(shuffle_batches(len(t), b, r)) for t, r in zip(train_sets, rngs)]
        for step in range(max(len(p) for p in plans)):
            idx = np.zeros((n, b), dtype=np.int64)
            weight = np.zeros((n, b), dtype=np.float32)
            active = np.zeros(n, dtype=bool)
            for m, plan in enumerate(plans):
                if step < len(plan):
                    rows = train_sets[m][plan[step]]
                    idx[m, : len(rows)] = rows
                    weight[m, : len(rows)] = 1.0
                    active[m] = True
            idx_t = torch.from_numpy(idx).to(device)
            w = torch.from_numpy(weight).to(device)
            xb = x_dev[idx_t]
            for m, aug in enumerate(augs):
                xb[m] = aug(xb[m], idx[m], int(done[m]))
            done += active
            out = forward(params, buffers, xb)  # (N, b, C)
            ce = F.cross_entropy(
                out.reshape(n * b, -1), y_dev[idx_t].reshape(-1), reduction="none"
            ).reshape(n, b)
            loss = ((ce * w).sum(1) / w.sum(1).clamp_min(1.0)).sum()
            grads = torch.autograd.grad(loss, list(params.values()))
            state.step(grads, torch.from_numpy(active).to(device))
        if on_epoch is not None:
            on_epoch(epoch)
    return [
        {
            **{k: v[m].detach().cpu().clone() for k, v in params.items()},
            **{k: v[m].detach().cpu().clone() for k, v in buffers.items()},
        }
        for m in range(n)
    ]


class _Optimizer:
    """PyTorch's SGD (momentum, no dampening) and Adam updates on stacked parameters, skipping
    the models that have no batch at this step (their state must not move)."""

    def __init__(self, cfg: Any, params: dict[str, Any], n: int) -> None:
        import torch

        self.cfg, self.params = cfg, list(params.values())
        dev = self.params[0].device
        self.t = torch.zeros(n, dtype=torch.float64, device=dev)  # Adam steps per model
        self.started = torch.zeros(n, dtype=torch.bool, device=dev)  # SGD momentum buffers
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params] if cfg.optimizer == "adam" else []

    def step(self, grads: tuple[Any, ...], active: Any) -> None:
        import torch

        cfg = self.cfg
        with torch.no_grad():
            if cfg.optimizer == "adam":
                self.t += active.to(self.t.dtype)
                b1, b2, eps = 0.9, 0.999, 1e-8
                for p, g, m, v in zip(self.params, grads, self.m, self.v):
                    shape = (-1,) + (1,) * (p.dim() - 1)
                    a = active.view(shape)
                    t = self.t.clamp_min(1).view(shape)
                    m.copy_(torch.where(a, b1 * m + (1 - b1) * g, m))
                    v.copy_(torch.where(a, b2 * v + (1 - b2) * g * g, v))
                    step_size = (cfg.lr / (1 - b1**t)).to(p.dtype)
                    denom = (v.sqrt() / torch.sqrt(1 - b2**t).to(p.dtype)) + eps
                    p.sub_(torch.where(a, step_size * m / denom, torch.zeros_like(p)))
                return
            for p, g, buf in zip(self.params, grads, self.m):
                shape = (-1,) + (1,) * (p.dim() - 1)
                a = active.view(shape)
                if cfg.momentum:
                    first = (~self.started).view(shape)
                    buf.copy_(torch.where(a, torch.where(first, g, cfg.momentum * buf + g), buf))
                    upd = buf
                else:
                    upd = g
                p.sub_(torch.where(a, cfg.lr * upd, torch.zeros_like(p)))
            self.started |= active


def stack_groups(jobs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Jobs that can train together: non-private recipes of one set whose training sets all
    hold at least a full batch; every other job alone."""
    groups: dict[str, list[dict[str, Any]]] = {}
    alone: list[list[dict[str, Any]]] = []
    for job in jobs:
        r = job["recipe"]
        if not is_private(r["mech"]) and int(job["mask"].sum()) >= r["batch_size"]:
            groups.setdefault(job["kind"], []).append(job)
        else:
            alone.append([job])
    chunks = [g[i : i + MAX_STACK] for g in groups.values() for i in range(0, len(g), MAX_STACK)]
    return [*chunks, *alone]


def train_stacked_jobs(jobs: list[dict[str, Any]], data: Any, device: Any, tick: Any) -> None:
    """Train non-private ``jobs`` of one set together (:func:`train_stacked`) and save each."""
    t0 = time.perf_counter()
    cfgs = [job_cfg(j, device) for j in jobs]
    sets = [j["points"][j["mask"]] for j in jobs]
    states = train_stacked(
        cfgs[0], [c.seed for c in cfgs], sets, data.x, data.y, data.shape, data.n_classes, device
    )
    per_model = (time.perf_counter() - t0) / len(jobs)
    for job, cfg, state, tr in zip(jobs, cfgs, states, sets):
        steps = cfg.epochs * -(-len(tr) // cfg.batch_size)
        tick(
            save_state(
                job, cfg, state, data, device, per_model, steps=steps, epsilon=None, stacked=True
            )
        )
