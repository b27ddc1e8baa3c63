"""Stage ``select``: a trained run + a public pool -> selected points and a fine-tuned run
(budget composed), or, over several strategies / budgets / seeds, the accuracy-versus-labels
curve (paper 2 Fig. 1–3)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from privtool.artifacts import MODEL, SPLITS, check_out, staged_dir
from privtool.config import Params
from privtool.errors import PrivtoolError
from privtool.release import with_split
from privtool.stages.common import finish_run, write_csv
from privtool.training import NullProgress, evaluate, resolve_device

SELECTED = "selected.csv"


def _common(plan: Any, parent: Any) -> dict[str, Any]:
    t = parent.target
    return {
        "dataset": t.data.name,
        "model": t.params.train.model,
        "mechanism": t.metrics.get("mechanism"),
        "parent": plan.candidate.spec,
        "parent_epoch": t.epoch if t.epoch is not None else t.metrics.get("epochs"),
    }


def run(
    params: Params,
    target: str,
    out: str | Path,
    *,
    epsilon_limit: float | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Select ``select.n_labeled`` public points with ``select.strategy`` from ``target``'s
    public pool, fine-tune the parent on them and write the new run to ``out``."""
    import torch

    from privtool.select import core

    cfg = params.select
    check_out(out)
    plan = core.plan(cfg.strategy, target, cfg, epsilon_limit=epsilon_limit)
    parent = core.load_parent(plan.candidate.spec, resolve_device(cfg.device))
    pool = core.parent_pool(parent, cfg)
    _, parent_acc = evaluate(parent.model, parent.x_test, parent.y_test, 1024)
    outcome = core.select_and_finetune(
        parent,
        pool,
        plan,
        cfg,
        strategy=cfg.strategy,
        n_labeled=cfg.n_labeled,
        seed=cfg.seed,
        progress=progress,
    )
    idx = outcome.selection.indices
    metrics = {
        **_common(plan, parent),
        **outcome.metrics,
        "parent_test_accuracy": parent_acc,
        "accuracy_gain": outcome.metrics["test_accuracy"] - parent_acc,
        "labels_revealed": pool.revealed,
        **core.privacy_metrics(plan),
        "noise": core.noise_label(parent),
    }
    metrics = with_split(metrics)
    warning = core.later_checkpoints_warning(plan)
    rows = [
        {
            "rank": r,
            "pool_index": int(i),
            "source": pool.record["pollution"]["dataset"]
            if pool.polluted[i]
            else pool.record["dataset"],
            "source_index": int(pool.origin[i]),
            "label": int(lab),
            "polluted": int(pool.polluted[i]),
        }
        for r, (i, lab) in enumerate(zip(idx, outcome.labels))
    ]
    with staged_dir(out) as tmp:
        torch.save(
            {k: v.detach().cpu().clone() for k, v in outcome.finetuned.model.state_dict().items()},
            tmp / MODEL,
        )
        np.savez(tmp / SPLITS, **{k: v.astype(np.int64) for k, v in parent.target.splits.items()})
        write_csv(tmp / SELECTED, rows)
        write_csv(tmp / "plots" / "finetune.csv", outcome.finetuned.curve)
        finish_run(
            tmp,
            stage="select",
            params={"select": params.as_dict()["select"]},
            metrics=metrics,
            device=str(parent.target.device),
            payload=[MODEL, SPLITS, SELECTED],
            inputs={
                "parent": core.parent_record(parent, plan),
                "data": (parent.target.meta.get("inputs") or {}).get("data"),
                "public_pool": pool.record,
            },
            extra={
                "privacy": plan.record(),
                "train_params": parent.target.meta.get("params"),
                "seconds": round(outcome.finetuned.seconds, 3),
                "warnings": [warning] if warning else [],
            },
        )
    return {**metrics, "warnings": [warning] if warning else []}


def run_curve(
    params: Params,
    target: str,
    out: str | Path,
    *,
    strategies: Sequence[str],
    budgets: Sequence[int],
    seeds: int,
    epsilon_limit: float | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Every strategy × budget × seed from the same run (each strategy from the checkpoint its
    budget plan picks under ``epsilon_limit``); writes per-seed and mean ± sd CSVs and a PNG."""
    from privtool.select import STRATEGIES, core
    from privtool.select.compose import compose_curve, curve_parent
    from privtool.select.curve import plot_curve, summarise

    cfg = params.select
    check_out(out)
    for s in strategies:
        STRATEGIES.get(s)
    plans = {s: core.plan(s, target, cfg, epsilon_limit=epsilon_limit) for s in strategies}
    device = resolve_device(cfg.device)
    parents: dict[str, Any] = {}
    for p in plans.values():
        if p.candidate.spec not in parents:
            parents[p.candidate.spec] = core.load_parent(p.candidate.spec, device)
    first = parents[next(iter(plans.values())).candidate.spec]
    pool = core.parent_pool(first, cfg)
    for n in budgets:
        if n > len(pool):
            raise PrivtoolError(
                f"budget {n} is more than the {len(pool)} points of the public "
                f"pool ({pool.record['dataset']} {pool.record['split']}); lower "
                f"--budgets"
            )
    baselines = {}
    for spec, parent in parents.items():
        baselines[spec] = evaluate(parent.model, parent.x_test, parent.y_test, 1024)[1]
    progress = progress or NullProgress()
    progress.start(len(strategies) * len(budgets) * seeds, "select curve")
    rows: list[dict[str, Any]] = []
    private_cells: list[dict[str, Any]] = []  # NearPrivate releases, composed below
    try:
        for s in strategies:
            plan = plans[s]
            parent = parents[plan.candidate.spec]
            priv = core.privacy_metrics(plan)
            for n in budgets:
                for i in range(seeds):
                    seed = cfg.seed + i
                    o = core.select_and_finetune(
                        parent,
                        pool,
                        plan,
                        replace(cfg, strategy=s),
                        strategy=s,
                        n_labeled=n,
                        seed=seed,
                        record_curve=False,
                    )
                    row = {
                        "strategy": s,
                        "n_labeled": n,
                        "seed": seed,
                        "test_accuracy": o.metrics["test_accuracy"],
                        "parent": plan.candidate.spec,
                        "parent_epoch": parent.target.epoch,
                        "parent_test_accuracy": baselines[plan.candidate.spec],
                        "epsilon": priv["epsilon"],
                        "pollution_selected_fraction": o.metrics.get("pollution_selected_fraction"),
                    }
                    rows.append(row)
                    if STRATEGIES.get(s).uses_private:
                        private_cells.append(o.metrics)
                    progress.advance(strategy=s, n=n, seed=seed, acc=row["test_accuracy"])
    finally:
        progress.stop()
    private = [s for s in strategies if STRATEGIES.get(s).uses_private]
    whole = compose_curve(
        curve_parent(list(plans.values()), first.target.metrics, record_level=bool(private)),
        list(plans[private[0]].extra) if private else [],
        private_cells,
    )
    for r in rows:
        r["epsilon_whole_curve"] = whole["epsilon_composed"]
    summary = summarise(rows)
    metrics: dict[str, Any] = {
        **{
            k: v
            for k, v in _common(plans[strategies[0]], first).items()
            if k not in ("parent", "parent_epoch")
        },
        "budgets": list(budgets),
        "seeds": seeds,
        "strategies": list(strategies),
        "noise": core.noise_label(first),
        "n_pool": len(pool),
        "parent_test_accuracy": {spec: acc for spec, acc in baselines.items()},
        "parent": {s: p.candidate.spec for s, p in plans.items()},
        "epsilon": {s: core.privacy_metrics(p)["epsilon"] for s, p in plans.items()},
        # every private release of the whole curve composed (privtool.select.compose)
        "epsilon_whole_curve": whole["epsilon_composed"],
        "delta_whole_curve": whole["delta_composed"],
        "whole_curve_privacy": whole,
        "test_accuracy": {
            s: {str(r["n_labeled"]): r["test_accuracy_mean"] for r in summary if r["strategy"] == s}
            for s in strategies
        },
        "test_accuracy_sd": {
            s: {str(r["n_labeled"]): r["test_accuracy_sd"] for r in summary if r["strategy"] == s}
            for s in strategies
        },
    }
    if pool.polluted.any():
        metrics["pollution_pool_fraction"] = float(pool.polluted.mean())
        metrics["pollution_selected_fraction"] = {
            s: {
                str(r["n_labeled"]): r["pollution_selected_fraction_mean"]
                for r in summary
                if r["strategy"] == s
            }
            for s in strategies
        }
    title = (
        f"{metrics['mechanism']} {metrics['model']} on {metrics['dataset']}: "
        f"{seeds} seed{'s' if seeds > 1 else ''}, mean ± sd"
        + (
            f", pool polluted {pool.polluted.mean():.0%} with {pool.record['pollution']['dataset']}"
            if pool.polluted.any()
            else ""
        )
        + _whole_label(whole)
    )
    with staged_dir(out) as tmp:
        write_csv(tmp / "plots" / "curve.csv", rows)
        write_csv(tmp / "plots" / "curve_summary.csv", summary)
        for s in strategies:
            write_csv(
                tmp / "plots" / "strategies" / f"{s}.csv",
                [r for r in summary if r["strategy"] == s],
            )
        plot_curve(
            summary,
            tmp / "curve.png",
            title=title,
            baselines={f"before fine-tuning ({spec})": acc for spec, acc in baselines.items()},
        )
        finish_run(
            tmp,
            stage="select",
            params={"select": params.as_dict()["select"]},
            metrics=metrics,
            device=str(device),
            payload=["plots/curve.csv", "curve.png"],
            inputs={
                "parents": {
                    spec: core.parent_record(
                        p, plans[next(s for s in strategies if plans[s].candidate.spec == spec)]
                    )
                    for spec, p in parents.items()
                },
                "data": (first.target.meta.get("inputs") or {}).get("data"),
                "public_pool": pool.record,
            },
            extra={
                "privacy": {s: p.record() for s, p in plans.items()},
                "whole_curve_privacy": whole,
                "mode": "curve",
            },
        )
    warnings = sorted({w for p in plans.values() if (w := core.later_checkpoints_warning(p))})
    return {**metrics, "warnings": warnings}


def _whole_label(whole: dict[str, Any]) -> str:
    eps = whole.get("epsilon_composed")
    return (
        f"\nwhole curve: ε = {'∞' if eps is None else f'{eps:.3g}'} "
        f"({whole['n_private_releases']} NearPrivate releases composed; "
        f"legend: ε of one cell)"
    )
