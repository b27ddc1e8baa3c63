"""``privtool attack``, ``privtool store`` and ``privtool audit``: attacks on a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from privtool.cli.common import (
    DeviceOpt,
    JsonOpt,
    ParamsOpt,
    RichProgress,
    SeedOpt,
    SetOpt,
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
def attack(
    name: str = typer.Option(..., "--attack", help="attack name (registry ATTACKS)"),
    target: str = typer.Option(..., "--target", help="train run: RUN_DIR or RUN_DIR@EPOCH"),
    checkpoint: Optional[int] = typer.Option(
        None,
        "--checkpoint",
        help="attack the run's checkpoint at this epoch (same as --target RUN_DIR@EPOCH)",
    ),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="attack directory to write"),
    params: Path = ParamsOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    seed: Optional[int] = SeedOpt,
    device: Optional[str] = DeviceOpt,
) -> None:
    """Attack a trained run and write scores, tables and pictures.

    Examples:

      privtool attack --attack iga --target runs/train/gauss-eps1 --json

      privtool attack --attack inversion --target runs/train/none --set attack.n_targets=5

      privtool attack --attack reference --target runs/train/none --set attack.n_models=8 --json

      privtool attack --attack lira --target runs/train/gauss-eps1   (online + offline LiRA)

      privtool attack --attack rmia --target runs/train/gauss-eps1 --json   (RMIA, same store)
    """
    shortcuts = [
        f"attack.{k}={v}" for k, v in (("seed", seed), ("device", device)) if v is not None
    ]
    p = _params(params, sets or [], shortcuts)
    import privtool.attacks  # noqa: F401  (registers every attack)
    from privtool.checkpoints import resolve_target
    from privtool.stages import attack as stage

    target = resolve_target(target, checkpoint)
    dest = out_dir or Path("runs") / "attack" / name / Path(target.split("@")[0]).name
    metrics = stage.run(name, target, dest, p.as_dict(), progress=RichProgress(enabled=True))
    _warn(metrics.get("warnings", []))  # e.g. augmented queries on a model trained without
    err.print(f"wrote {dest}", highlight=False)
    for png in sorted(dest.rglob("*.png")):
        err.print(f"picture: {png}", highlight=False)
    emit(metrics, as_json, f"privtool attack {name} → {dest}")


@app.command()
@handle_errors
def store(
    target: str = typer.Option(..., "--target", help="train run whose recipe the models copy"),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="store directory (default runs/store/<dataset>-<model>-<hash>)"
    ),
    role: str = typer.Option(
        "reference", "--role", help="reference (the recipe without DP) | shadow (the recipe as is)"
    ),
    online: bool = typer.Option(False, "--online", help="also train LiRA's online models"),
    params: Path = ParamsOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    seed: Optional[int] = SeedOpt,
    device: Optional[str] = DeviceOpt,
) -> None:
    """Train (or resume, or extend) the reference/shadow models membership attacks share.

    attack.n_models models per set, on random halves of the run's shadow split (plus, with
    --online, of its train and test splits), one process per CPU core; their logits on every
    attack point are cached. Attacks given --set attack.store=DIR use the store as it is.

    Examples:

      privtool store --target runs/train/none --out runs/store/reference --online

      privtool store --target runs/train/gauss-eps1 --role shadow --set attack.n_models=10
    """
    shortcuts = [
        f"attack.{k}={v}" for k, v in (("seed", seed), ("device", device)) if v is not None
    ]
    p = _params(params, sets or [], shortcuts)
    import privtool.attacks  # noqa: F401  (registers every attack)
    from privtool.stages import store as stage

    metrics = stage.run(
        target, out_dir, p.as_dict(), role=role, online=online, progress=RichProgress(enabled=True)
    )
    err.print(
        f"store {metrics['store']}: {metrics['n_models']} models per set, "
        f"{metrics['store_models_trained']} trained now",
        highlight=False,
    )
    emit(metrics, as_json, f"privtool store → {metrics['store']}")


@app.command()
@handle_errors
def audit(
    target: str = typer.Option(..., "--target", help="train run: RUN_DIR or RUN_DIR@EPOCH"),
    canary: Optional[str] = typer.Option(
        None,
        "--canary",
        help="input (black box: mislabelled "
        "images, loss score) | gradient (white box: Dirac or "
        "random gradients of norm C) (audit.canary)",
    ),
    canaries: Optional[int] = typer.Option(
        None, "--canaries", help="M, each in with probability 1/2 (audit.canaries)"
    ),
    runs: Optional[int] = typer.Option(
        None, "--runs", help="R training runs; R > 1 adds the many-run bounds (audit.runs)"
    ),
    guesses: Optional[int] = typer.Option(
        None, "--guesses", help="k guesses of the one-run audit (default: a grid, union-bounded)"
    ),
    two_sided: bool = typer.Option(
        False, "--two-sided", help="also guess 'out' for the lowest scores (audit.two_sided)"
    ),
    confidence: Optional[float] = typer.Option(
        None, "--confidence", help="level of every ε_lb (audit.confidence)"
    ),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="audit directory (default RUN_DIR/audit)"
    ),
    params: Path = ParamsOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    seed: Optional[int] = SeedOpt,
    device: Optional[str] = DeviceOpt,
) -> None:
    """Audit a run's recipe with canaries: audited ε (lower) beside the accounted ε (upper).

    Re-trains the run's recipe with M canaries (each in with probability 1/2) through the
    run's own mechanism and bounds ε from below at the run's δ.

    Examples:

      privtool audit --target runs/gauss-1 --canary gradient --canaries 1000 --json

      privtool audit --target runs/train/vmf-epsv10k --canary gradient --set audit.direction=random

      privtool audit --target runs/train/none --canary input --canaries 1000

      privtool audit --target runs/train/gauss-eps8 --runs 8 --canaries 200
    """
    shortcuts = [
        f"audit.{k}={v}"
        for k, v in (
            ("canary", canary),
            ("canaries", canaries),
            ("runs", runs),
            ("guesses", guesses),
            ("confidence", confidence),
            ("seed", seed),
            ("device", device),
            ("two_sided", "true" if two_sided else None),
        )
        if v is not None
    ]
    p = _params(params, sets or [], shortcuts)
    from privtool.artifacts import parse_target
    from privtool.stages import audit as stage

    run_dir, epoch = parse_target(target)
    dest = out_dir or run_dir / ("audit" if epoch is None else f"audit-epoch{epoch}")
    metrics = stage.run(target, dest, p.as_dict(), progress=RichProgress(enabled=True))
    err.print(f"wrote {dest}; picture: {dest / 'scores.png'}", highlight=False)
    if as_json:
        emit(metrics, as_json, "")
        return
    acc = metrics["epsilon_accounted"]
    out.print(
        f"audited ε ≥ {metrics['epsilon_lb']:.3g} (one run, {metrics['confidence']:.0%} "
        f"confidence, δ = {metrics['delta']:.3g})  ≤  accounted ε = "
        f"{'∞' if acc is None else format(acc, '.4g')}  "
        f"[{metrics['canary']} canaries: {metrics['correct']}/{metrics['guesses']} "
        f"guesses right of {metrics['canaries']}]",
        highlight=False,
    )
    emit(metrics, False, f"privtool audit → {dest}")
