"""Store entry point: :func:`ensure_store` gives a target the store it needs, training only
the models that are missing.

This room decides *what* to train: it resolves the store directory and checks its identity
(:mod:`privtool.store.identity`), lists the missing models as jobs (one per model: its mask,
seed, recipe and files), hands them to the back end ``attack.backend`` names (:data:`BACKENDS`:
``local`` = :mod:`privtool.store.process` with :mod:`privtool.store.stacked`, ``ray`` =
:mod:`privtool.store.ray_tasks`) with a progress bar, then rewrites ``store.json`` and the
stacked signals (:mod:`privtool.store.storage`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from privtool.artifacts import write_json
from privtool.errors import PrivtoolError
from privtool.store.identity import (
    KINDS,
    check_identity,
    model_mask,
    model_seed,
    resolve_store_dir,
    store_points,
    target_recipe,
)
from privtool.store.process import run_local
from privtool.store.ray_tasks import run_ray
from privtool.store.storage import (
    Store,
    export_signals,
    meta_with,
    model_complete,
    model_file,
    read_meta,
    write_points,
)

# attack.backend -> fn(jobs, target, attack config, tick) training the jobs, saving each model
BACKENDS: dict[str, Callable[..., None]] = {"local": run_local, "ray": run_ray}


def check_shadow(target: Any) -> None:
    """Refuse (one line) a target without a shadow pool to train store models on."""
    shadow = target.splits.get("shadow")
    if shadow is None or len(shadow) < 2:
        raise PrivtoolError(
            f"target run {target.dir} has no 'shadow' split (or fewer than 2 "
            f"points) to train reference/shadow models on; train it with "
            f"data.splits.shadow > 0"
        )


def check_store_inputs(target: Any, cfg: Any, role: str = "reference") -> None:
    """Fail early (before any output is written) on a target without a shadow pool or an
    explicit store that cannot serve it."""
    check_shadow(target)
    store_dir, identity, explicit = resolve_store_dir(target, cfg, role)
    if explicit:
        meta = read_meta(store_dir)
        if meta is None:
            raise PrivtoolError(
                f"attack.store {store_dir} is not a model store (no store.json); "
                f"make it with `privtool store --target {target.dir} --out "
                f"{store_dir}` or leave attack.store unset"
            )
        check_identity(store_dir, meta["identity"], identity, target)


def ensure_store(
    target: Any,
    cfg: Any,
    *,
    role: str = "reference",
    online: bool = False,
    build: bool | None = None,
    progress: Any = None,
) -> Store:
    """The store ``target`` needs with ``cfg.n_models`` models per set (``offline``, plus
    ``online`` when asked), training only the models that are missing.

    A store named by ``attack.store`` is used as it is (``build`` False): it must match the
    target's dataset, splits and recipe and hold enough models — it is never modified, so a
    DVC stage may depend on it. An unnamed store lives under ``runs/store/`` and is built or
    extended on demand; ``privtool store`` builds a named one (``build`` True).
    """
    check_shadow(target)
    store_dir, identity, explicit = resolve_store_dir(target, cfg, role)
    build = (not explicit) if build is None else build
    kinds = ("offline", "online") if online else ("offline",)
    n = cfg.n_models
    if online and n < 2:
        raise PrivtoolError(
            f"attack.n_models={n} is too few for online LiRA: it needs models "
            f"with and without each point; use at least 2"
        )
    meta = read_meta(store_dir)
    if meta is None:
        if not build:
            raise PrivtoolError(
                f"attack.store {store_dir} is not a model store (no store.json); "
                f"make it with `privtool store --target {target.dir} --out "
                f"{store_dir}` or leave attack.store unset"
            )
        meta = {"identity": identity, "models": {}}
    else:
        check_identity(store_dir, meta["identity"], identity, target)
    points = store_points(target.splits)
    shadow = np.asarray(target.splits["shadow"], dtype=np.int64)
    labels = target.data.y[points]
    points_sha = hashlib.sha256(points.astype("<i8").tobytes()).hexdigest()
    pools = {"offline": shadow, "online": np.union1d(target.splits["train"], target.splits["test"])}

    jobs: list[dict[str, Any]] = []
    for kind in kinds:
        for m in range(n):
            mask = model_mask(points, pools[kind], kind, cfg.seed, m)
            npz = model_file(store_dir, kind, m)
            if model_complete(npz, mask, points_sha):
                continue
            if not build:
                have = sum(
                    model_complete(
                        model_file(store_dir, kind, i),
                        model_mask(points, pools[kind], kind, cfg.seed, i),
                        points_sha,
                    )
                    for i in range(n)
                )
                raise PrivtoolError(
                    f"store {store_dir} holds {have} complete {kind} models, "
                    f"attack.n_models={n} asks for {n}; extend it with "
                    f"`privtool store --target {target.dir} --out {store_dir} "
                    f"--set attack.n_models={n}{' --online' if online else ''}` "
                    f"or lower attack.n_models"
                )
            held_out = np.isin(points, pools[kind]) & ~mask
            jobs.append(
                {
                    "id": m,
                    "kind": kind,
                    "mask": mask,
                    "eval": held_out,
                    "points": points,
                    "points_sha256": points_sha,
                    "seed": model_seed(cfg.seed, kind, m),
                    "recipe": asdict(target_recipe(target, role)),
                    "pt": model_file(store_dir, kind, m, ".pt"),
                    "npz": npz,
                }
            )

    t0 = time.perf_counter()
    if jobs:
        store_dir.mkdir(parents=True, exist_ok=True)
        write_points(store_dir, points, labels, shadow)
        write_json(store_dir / "store.json", meta_with(meta, store_dir, kinds))
        run_jobs(jobs, target, cfg, role, progress)
    seconds = time.perf_counter() - t0

    meta = meta_with(meta, store_dir, KINDS)
    if jobs:
        write_json(store_dir / "store.json", meta)
    store = Store(
        dir=store_dir,
        identity=identity,
        points=points,
        labels=labels,
        shadow=shadow,
        n_models=n,
        kinds=kinds,
        trained=len(jobs),
        seconds=seconds,
        records={k: sorted(meta["models"].get(k, []), key=lambda r: r["id"]) for k in kinds},
    )
    if jobs:
        for kind in kinds:
            export_signals(store, kind)
    return store


def run_jobs(jobs: list[dict[str, Any]], target: Any, cfg: Any, role: str, progress: Any) -> None:
    """Train ``jobs`` on the back end ``cfg.backend`` names, advancing ``progress`` per model."""
    what = f"store {role} {jobs[0]['recipe']['model']} ({len(jobs)} models)"
    if progress is not None:
        progress.start(len(jobs), what)

    def tick(rec: dict[str, Any]) -> None:
        if progress is not None:
            progress.advance(model=f"{rec['kind']} {rec['id']}", acc=rec["test_accuracy"])

    try:
        BACKENDS[cfg.backend](jobs, target, cfg, tick)
    finally:
        if progress is not None:
            progress.stop()
