"""``privtool select``, ``privtool calibrate`` and ``privtool report``: what follows a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from privtool.cli.common import (
    DeviceOpt,
    JsonOpt,
    ParamsOpt,
    RichProgress,
    SeedOpt,
    SetOpt,
    _eps_text,
    _params,
    _warn,
    app,
    emit,
    err,
    handle_errors,
    out,
)


@app.command()
@handle_errors
def select(
    strategy: Optional[str] = typer.Option(
        None,
        "--strategy",
        help="random | entropy | margin | diverse-public | near-private; "
        "all or a comma list (a,b) runs the accuracy-vs-labels curve (default select.strategy)",
    ),
    target: str = typer.Option(..., "--target", help="train run: RUN_DIR or RUN_DIR@EPOCH"),
    checkpoint: Optional[int] = typer.Option(
        None,
        "--checkpoint",
        help="start from this epoch's checkpoint (same as --target RUN_DIR@EPOCH)",
    ),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="directory to write"),
    n_labeled: Optional[int] = typer.Option(
        None, "--n-labeled", help="label budget N_labeled (select.n_labeled)"
    ),
    epsilon_limit: Optional[float] = typer.Option(
        None,
        "--epsilon-limit",
        help="total ε allowed: picks the latest checkpoint whose "
        "composed ε fits (select.epsilon_limit); a plan above it is refused",
    ),
    budgets: Optional[str] = typer.Option(
        None, "--budgets", help="curve: N_labeled values, e.g. 10,20,50 (select.curve.budgets)"
    ),
    seeds: Optional[int] = typer.Option(
        None, "--seeds", help="curve: seeds per point (select.curve.seeds)"
    ),
    params: Path = ParamsOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    seed: Optional[int] = SeedOpt,
    device: Optional[str] = DeviceOpt,
) -> None:
    """Pick public points to label, fine-tune a DP run on them, compose the privacy budget.

    One strategy writes a fine-tuned run (model.pt, selected.csv, metrics.json with
    test_accuracy and the composed epsilon; meta.json links the parent by path and hash).
    --strategy all (or a,b), --budgets or --seeds write the accuracy-versus-labels curve
    instead: every strategy x budget x seed from the same run, mean +- sd, plots/*.csv and
    curve.png. near-private reads the private training data and adds epsilon_dp_pca +
    epsilon_support (basic composition); the others add nothing.

    Examples:

      privtool select --strategy diverse-public --target runs/train/gauss-eps3 --json

      privtool select --strategy near-private --target runs/train/gauss-eps3@6 --n-labeled 100

      privtool select --strategy near-private --target runs/train/gauss-eps3 --epsilon-limit 3

      privtool select --strategy all --budgets 10,20,50 --seeds 5 --target runs/train/gauss-eps1 --out runs/select/curve

      privtool select --strategy all --target runs/train/gauss-eps1 --set select.pollution.dataset=lfw-subset
    """
    from privtool.checkpoints import resolve_target

    names = None
    if strategy is not None and (strategy == "all" or "," in strategy):
        names = strategy
    curve = names is not None or budgets is not None or seeds is not None
    shortcuts = [
        f"{k}={v}"
        for k, v in (
            ("select.strategy", None if curve else strategy),
            ("select.n_labeled", n_labeled),
            ("select.seed", seed),
            ("select.device", device),
            ("select.epsilon_limit", epsilon_limit),
            ("select.curve.budgets", budgets),
            ("select.curve.seeds", seeds),
            (
                "select.curve.strategies",
                names
                if names is not None
                else (strategy if curve and strategy is not None else None),
            ),
        )
        if v is not None
    ]
    p = _params(params, sets or [], shortcuts)
    from privtool.artifacts import parse_target
    from privtool.select import STRATEGIES
    from privtool.stages import select as stage

    target = resolve_target(target, checkpoint)
    run_name = parse_target(target)[0].name + (
        f"@{parse_target(target)[1]}" if parse_target(target)[1] is not None else ""
    )
    cfg = p.select
    if not curve:
        STRATEGIES.get(cfg.strategy)
        dest = out_dir or Path("runs") / "select" / f"{cfg.strategy}-n{cfg.n_labeled}-{run_name}"
        metrics = stage.run(p, target, dest, progress=RichProgress(enabled=True))
        _warn(metrics.pop("warnings", []))
        err.print(f"wrote {dest}", highlight=False)
        if not as_json:
            metrics.pop("release", None)  # metrics.json keeps the split; the table the fields
            metrics.pop("diagnostics", None)
        emit(metrics, as_json, f"privtool select {cfg.strategy} → {dest}")
        return
    chosen = STRATEGIES.names() if cfg.curve.strategies == "all" else list(cfg.curve.strategies)
    for name in chosen:
        STRATEGIES.get(name)
    dest = out_dir or Path("runs") / "select" / f"curve-{run_name}"
    metrics = stage.run_curve(
        p,
        target,
        dest,
        strategies=chosen,
        budgets=cfg.curve.budgets,
        seeds=cfg.curve.seeds,
        progress=RichProgress(enabled=True),
    )
    _warn(metrics.pop("warnings", []))
    err.print(f"wrote {dest}; picture: {dest / 'curve.png'}", highlight=False)
    if as_json:
        emit(metrics, as_json, "")
        return
    _print_curve(metrics)


def _print_curve(m: dict[str, Any]) -> None:
    """Strategy x N_labeled table of test accuracy, mean ± sd (and polluted fraction)."""
    pol = m.get("pollution_selected_fraction")
    table = Table(
        title=f"test accuracy after fine-tuning, mean ± sd over {m['seeds']} seeds "
        f"(before: {', '.join(f'{k} {v:.3f}' for k, v in m['parent_test_accuracy'].items())})"
    )
    table.add_column("strategy")
    table.add_column("ε", justify="right")
    for n in m["budgets"]:
        table.add_column(f"N={n}", justify="right")
    for s in m["strategies"]:
        eps = m["epsilon"][s]
        cells = []
        for n in m["budgets"]:
            cell = f"{m['test_accuracy'][s][str(n)]:.3f} ± {m['test_accuracy_sd'][s][str(n)]:.3f}"
            if pol:
                cell += f" ({pol[s][str(n)]:.0%} polluted)"
            cells.append(cell)
        table.add_row(s, "∞" if eps is None else f"{eps:.3g}", *cells)
    whole = m.get("whole_curve_privacy")
    if whole:
        table.caption = (
            f"ε above: one cell. Whole curve, every private release composed: "
            f"ε = {_eps_text(whole.get('epsilon_composed'))}, δ = "
            f"{whole.get('delta_composed')} ({whole['n_private_releases']} "
            f"NearPrivate releases; {whole.get('composition')})"
        )
    out.print(table)


@app.command()
@handle_errors
def calibrate(
    runs: Path = typer.Option(
        ...,
        "--runs",
        help="folder holding train/select runs and attack "
        "results (found by their meta.json, at any depth)",
    ),
    out_dir: Path = typer.Option(
        Path("results/calibration"), "--out", help="calibration directory to write"
    ),
    params: Path = ParamsOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Join every run and attack result into calibration tables (Markdown, CSV, JSON) and plots.

    One row per attacked model (run dir + meta.json hash, every ε field, accuracy, each
    attack's scores with intervals); paper 1's Tables 4-7 as views; the baseline mechanism's
    equivalent ε per run and attack (calibrate.baseline, default gaussian); the
    accuracy-matched comparison (calibrate.accuracy_tolerance); frontier, ROC and grid PNGs.

    Examples:

      privtool calibrate --runs runs --out results/calibration

      privtool calibrate --runs runs --set calibrate.accuracy_tolerance=0.05 --json

      privtool calibrate --runs runs --set calibrate.headline.membership=lira
    """
    p = _params(params, sets or [], [])
    from privtool.stages import calibrate as stage

    metrics = stage.run(runs, out_dir, p.as_dict())
    sentences = metrics.pop("equivalent")
    for w in metrics.pop("warnings"):
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    err.print(f"wrote {out_dir} ({out_dir / 'calibration.md'})", highlight=False)
    emit(metrics, as_json, f"privtool calibrate → {out_dir}")
    if not as_json and sentences:
        out.print("\n".join(sentences), highlight=False, markup=False, soft_wrap=True)


@app.command()
@handle_errors
def report(
    folder: Path = typer.Argument(
        ...,
        help="a calibration directory (privtool calibrate --out) "
        "or a folder of runs and attacks (calibrated in memory)",
    ),
    out_file: Optional[Path] = typer.Option(
        None,
        "--out",
        help="HTML file to write (default DIR/report.html); "
        "the Markdown version goes beside it (.md)",
    ),
    params: Path = ParamsOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Render a results folder as one self-contained HTML page (images embedded) and Markdown.

    Tables, equivalent-ε sentences, every plot, each run's settings and the command that
    reproduces it, and every file of the folder (PNGs embedded, the rest linked).

    Examples:

      privtool report results/calibration --out results/report.html

      privtool report runs --out /tmp/runs.html
    """
    p = _params(params, sets or [], [])
    from privtool.stages import report as stage

    dest = out_file or folder / "report.html"
    metrics = stage.run(folder, dest, p.as_dict())
    err.print(
        f"wrote {dest}" + (f" and {metrics['markdown']}" if metrics.get("markdown") else ""),
        highlight=False,
    )
    emit(metrics, as_json, f"privtool report → {dest}")
