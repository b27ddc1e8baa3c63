"""Store back end "local": train store models in this process or in a pool of processes.

On CUDA, or with ``attack.workers: 1``, the models train in this process: the non-private
models of a set together, stacked (:mod:`privtool.store.stacked`), the others one by one.
Otherwise they fan out over CPU cores with one process per core (``torch.set_num_threads(1)``
each; ``spawn`` context), each process training whole models with
:func:`privtool.store.build.train_job` and saving them itself. The worker initialiser and the
dataset shipping rule here are shared with the Ray back end (:mod:`privtool.store.ray_tasks`).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from privtool.errors import PrivtoolError
from privtool.store.build import train_job
from privtool.store.stacked import stack_groups, train_stacked_jobs

SHIP_BYTES = 256 << 20  # datasets up to this size are sent to worker processes, not reloaded

_WORKER: dict[str, Any] = {}


def worker_init(data: Any, data_cfg: dict[str, Any], fingerprint: str, threads: int) -> None:
    """Process-pool initialiser: one thread per process and the dataset, passed in (small
    sets: no re-parsing) or loaded once from ``data_cfg`` (large ones: no huge pickles)."""
    import torch

    torch.set_num_threads(threads)
    if data is None:
        from privtool.data import data_root, load_dataset

        data = load_dataset(
            data_cfg["dataset"],
            data_root(data_cfg.get("root")),
            image_size=data_cfg.get("image_size"),
        )
        if data.fingerprint() != fingerprint:
            raise PrivtoolError(f"dataset {data.name!r} changed while the store was training")
    _WORKER["data"] = data


def worker_data() -> Any:
    """The dataset :func:`worker_init` set up in this worker."""
    return _WORKER["data"]


def _pool_job(job: dict[str, Any]) -> dict[str, Any]:
    """Process-pool entry: train and save one model on the worker's dataset, on CPU."""
    return train_job(job, worker_data())


def cpu_count() -> int:
    """CPU cores this process may use (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def data_for_workers(target: Any) -> tuple[dict[str, Any], Any]:
    """The data section workers reload the dataset from, and the dataset itself when it is
    small enough to send (else None: each worker loads it once and checks its fingerprint)."""
    data_cfg = asdict(target.params.data)
    data_cfg["splits"] = dict(data_cfg["splits"])
    return data_cfg, (target.data if target.data.x.nbytes <= SHIP_BYTES else None)


def run_local(jobs: list[dict[str, Any]], target: Any, cfg: Any, tick: Any) -> None:
    """Train ``jobs``: in-process on CUDA or with one worker, else one process per core."""
    device = target.device
    workers = cfg.workers or cpu_count()
    workers = max(1, min(workers, len(jobs)))
    if getattr(device, "type", str(device)) == "cuda" or workers == 1:
        _run_in_process(jobs, target.data, device, tick)
        return
    _run_pool(jobs, target, workers, tick)


def _run_in_process(jobs: list[dict[str, Any]], data: Any, device: Any, tick: Any) -> None:
    """Train ``jobs`` here: stackable groups together, the others one by one."""
    import torch

    threads = torch.get_num_threads()
    if getattr(device, "type", str(device)) == "cpu":
        torch.set_num_threads(1)  # small models: one thread beats two that contend
    try:
        for group in stack_groups(jobs):
            if len(group) > 1:
                train_stacked_jobs(group, data, device, tick)
            else:
                tick(train_job(group[0], data, device))
    finally:
        torch.set_num_threads(threads)


def _run_pool(jobs: list[dict[str, Any]], target: Any, workers: int, tick: Any) -> None:
    """Train ``jobs`` in ``workers`` spawned processes, one thread each; ``tick`` each record
    as it arrives; on any failure cancel what has not started and re-raise."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    data_cfg, shipped = data_for_workers(target)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=worker_init,
        initargs=(shipped, data_cfg, target.data.fingerprint(), 1),
    ) as pool:
        futures = [pool.submit(_pool_job, job) for job in jobs]
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    tick(f.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise
