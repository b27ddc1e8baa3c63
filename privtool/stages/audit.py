"""Stage ``audit``: a train run -> its ε sandwich (audited lower bound ≤ accounted upper bound).

Writes ``audit.json`` (every estimator's ε_lb with its confidence and δ, the accounted ε of the
audit run at the same δ, canary counts and guesses), ``metrics.json`` (the same, flat),
``scores.npz`` (per run: canary scores and inclusion coins), ``scores.png`` (histogram of in/out
canary scores) and ``meta.json``. See :mod:`privtool.audit`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from privtool.artifacts import dumps, file_hash, staged_dir
from privtool.stages.common import finish_run
from privtool.training import resolve_device


def run(
    target_spec: str, out: str | Path, raw_params: dict[str, Any], *, progress: Any = None
) -> dict[str, Any]:
    """Audit ``target_spec`` (RUN_DIR or RUN_DIR@EPOCH) with ``raw_params['audit']`` into
    ``out``; return the flat metrics."""
    from privtool.attacks.target import load_target
    from privtool.audit.canaries import check_supported
    from privtool.audit.plots import plot_scores
    from privtool.audit.run import audit_settings, estimate, summarize, train_runs

    cfg = audit_settings(raw_params.get("audit"))
    target = load_target(target_spec, resolve_device(cfg.device))
    check_supported(cfg.canary, target.mechanism)
    runs = train_runs(target, target_spec, cfg, target.device, progress)
    delta = float(runs[0].delta)
    report = summarize(target, cfg, runs, estimate(runs, cfg, delta=delta))
    with staged_dir(out) as tmp:
        (tmp / "audit.json").write_text(dumps(report))
        extra = {}
        if runs[0].per_step is not None and runs[0].per_step.size <= 5_000_000:
            extra["per_step_run0"] = runs[0].per_step.astype(np.float32)  # ⟨c_i, g_t⟩
        np.savez(
            tmp / "scores.npz",
            scores=np.stack([r.scores for r in runs]),
            member=np.stack([r.member for r in runs]),
            **extra,
        )
        plot_scores(
            tmp / "scores.png",
            runs[0].scores,
            runs[0].member,
            title=f"{cfg.canary} canaries, {target.mechanism}: ε_lb "
            f"{report['epsilon_lb']:.3g} ≤ accounted "
            f"{'∞' if report['epsilon_accounted'] is None else format(report['epsilon_accounted'], '.3g')}",
        )
        metrics = {k: v for k, v in report.items() if not isinstance(v, (dict, list))}
        finish_run(
            tmp,
            stage="audit",
            params={"audit": {**(raw_params.get("audit") or {})}},
            metrics=metrics,
            device=str(target.device),
            payload=["audit.json", "scores.npz", "scores.png"],
            inputs={
                "target": {
                    "dir": str(target.dir),
                    "epoch": target.epoch,
                    "meta_sha256": file_hash(target.dir / "meta.json"),
                }
            },
        )
    return metrics
