"""Store back end "ray" (``attack.backend: ray``; SPEC §11): store models train as Ray tasks.

Each task trains one model on one thread of a Ray worker (any node) and returns its weights;
this process computes and saves its signals as it arrives (:func:`privtool.store.build.
save_state`), so worker nodes need privtool and the dataset, not the store's filesystem, and a
killed run resumes like the local one. Ray is an optional dependency (``privtool[ray]``),
imported only here and only when this back end runs.
"""

from __future__ import annotations

import time
from typing import Any

from privtool.errors import PrivtoolError
from privtool.store.build import fit_job, job_cfg, save_state
from privtool.store.process import cpu_count, data_for_workers, worker_data, worker_init


def ray_fit(
    job: dict[str, Any], data: Any, data_cfg: dict[str, Any], fingerprint: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Ray task: train one store model on one thread of a Ray worker (any node) and return
    its state_dict and fit summary; the driver computes and saves its signals, so worker
    nodes need privtool and the dataset, not the store's filesystem."""
    worker_init(data, data_cfg, fingerprint, 1)
    t0 = time.perf_counter()
    _, state, _, fit = fit_job(job, worker_data(), "cpu")
    return state, {**fit, "seconds": time.perf_counter() - t0}


def run_ray(jobs: list[dict[str, Any]], target: Any, cfg: Any, tick: Any) -> None:
    """Train ``jobs`` as Ray tasks (``attack.backend: ray``; SPEC §11): one CPU each, on the
    cluster at ``attack.ray_address`` or on a local Ray started here with ``attack.workers``
    CPUs (0: every core); tasks train on CPU. Results arrive in any order; each model is saved
    as it arrives, so a killed run resumes like the local one, and the models equal the local
    processes' (same seeds, one thread each)."""
    try:
        import ray
    except ImportError:
        raise PrivtoolError(
            "attack.backend=ray needs Ray: pip install 'privtool[ray]' "
            "(or set attack.backend=local)"
        ) from None
    import logging

    started = not ray.is_initialized()
    if started:
        local = {} if cfg.ray_address else {"num_cpus": cfg.workers or cpu_count()}
        try:
            ray.init(
                address=cfg.ray_address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                **local,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PrivtoolError(
                f"attack.ray_address={cfg.ray_address!r}: cannot start or reach Ray ({first})"
            ) from None
    try:
        data_cfg, shipped = data_for_workers(target)
        data_ref = ray.put(shipped)
        fit = ray.remote(num_cpus=1, max_retries=2)(ray_fit)
        by_ref = {
            fit.remote(job, data_ref, data_cfg, target.data.fingerprint()): job for job in jobs
        }
        pending = list(by_ref)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                job = by_ref[done[0]]
                state, summary = ray.get(done[0])
                tick(
                    save_state(
                        job,
                        job_cfg(job, "cpu"),
                        state,
                        target.data,
                        "cpu",
                        summary["seconds"],
                        steps=summary["steps"],
                        epsilon=summary["epsilon"],
                    )
                )
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()
