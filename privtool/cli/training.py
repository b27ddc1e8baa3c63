"""``privtool train``, ``privtool epsilon`` and ``privtool export``: a run and its ε."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from privtool.cli.common import (
    DeviceOpt,
    JsonOpt,
    ParamsOpt,
    RegistryCommand,
    RichProgress,
    SeedOpt,
    SetOpt,
    _params,
    app,
    emit,
    err,
    handle_errors,
    out,
)


@app.command(cls=RegistryCommand)
@handle_errors
def train(
    mech: Optional[str] = typer.Option(None, "--mech", help="{mechanisms}"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="see `privtool data list`"),
    model: Optional[str] = typer.Option(None, "--model", help="{models}"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    epsilon: Optional[float] = typer.Option(
        None, "--epsilon", help="whole-run ε target: solves σ (gaussian) or κ (vmf)"
    ),
    pretrain: Optional[str] = typer.Option(
        None,
        "--pretrain",
        help="rotation: first pre-train the feature layers on public data "
        "(pretrain.dataset, default the public split) to predict 0/90/180/270° rotations; no ε",
    ),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="run directory to write"),
    params: Path = ParamsOpt,
    sets: Optional[List[str]] = SetOpt,
    as_json: bool = JsonOpt,
    seed: Optional[int] = SeedOpt,
    device: Optional[str] = DeviceOpt,
) -> None:
    """Train a model under a privacy mechanism and write a run directory.

    Examples:

      privtool train --mech vmf

      privtool train --mech gaussian --epsilon 1 --out runs/gauss-1

      privtool train --mech vmf --set train.epsilon_v=50 --set train.partition=row

      privtool train --mech gaussian --epsilon 3 --set train.checkpoint_every=1 --out runs/g3
      (then any later stage takes --target runs/g3@2: epoch 2's weights and ε)

      privtool train --mech gaussian --epsilon 3 --pretrain rotation --set pretrain.epochs=20
    """
    from privtool.config import PRETRAIN_METHODS

    if pretrain is not None and pretrain not in PRETRAIN_METHODS:
        raise typer.BadParameter(
            f"{pretrain!r} is not a pre-training method; valid: {', '.join(PRETRAIN_METHODS)}",
            param_hint="'--pretrain'",
        )
    shortcuts = [
        f"{k}={v}"
        for k, v in (
            ("train.mech", mech),
            ("data.dataset", dataset),
            ("train.model", model),
            ("train.epochs", epochs),
            ("train.epsilon", epsilon),
            ("train.seed", seed),
            ("train.device", device),
            ("pretrain.method", pretrain),
        )
        if v is not None
    ]
    p = _params(params, sets or [], shortcuts)
    from privtool.stages import train as stage

    target = (
        out_dir or Path("runs") / f"{p.train.mech}-{p.data.dataset}-{p.train.model}-s{p.train.seed}"
    )
    metrics = stage.run(p, target, progress=RichProgress(enabled=True))
    from privtool.distributed import reports

    if not reports(p.train.distributed):  # torchrun rank > 0: rank 0 alone logs
        return
    for w in metrics.pop("warnings", []):
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    err.print(f"wrote {target}", highlight=False)
    if as_json:
        emit(metrics, as_json, f"privtool train → {target}")
        return
    checkpoints = metrics.pop("checkpoints", [])
    metrics.pop("release", None)  # the table shows the flat fields; metrics.json has the split
    metrics.pop("diagnostics", None)
    emit(metrics, as_json, f"privtool train → {target}")
    if checkpoints:
        _print_checkpoints(target, checkpoints)


def _print_checkpoints(run: Path, checkpoints: list[dict[str, Any]]) -> None:
    """One row per kept checkpoint: epoch, step, every ε field, accuracies and the gap."""
    eps_keys = sorted({k for c in checkpoints for k in c if k.startswith("epsilon")})
    cols = ["epoch", "step", *eps_keys, "train_accuracy", "test_accuracy", "train_gap"]
    table = Table(title=f"checkpoints (--target {run}@EPOCH)")
    for col in cols:
        table.add_column(col, justify="right")
    for c in checkpoints:
        table.add_row(
            *[
                (
                    "∞"
                    if c.get(k) is None and k.startswith("epsilon")
                    else f"{c[k]:.4g}"
                    if isinstance(c.get(k), float)
                    else str(c.get(k, ""))
                )
                for k in cols
            ]
        )
    out.print(table)


@app.command(cls=RegistryCommand)
@handle_errors
def epsilon(
    mech: str = typer.Option(..., "--mech", help="{mechanisms}"),
    noise_multiplier: Optional[float] = typer.Option(
        None, "--noise-multiplier", help="σ (gaussian)"
    ),
    sample_rate: Optional[float] = typer.Option(None, "--sample-rate", help="q = batch/n"),
    steps: Optional[int] = typer.Option(None, "--steps"),
    epochs: Optional[float] = typer.Option(
        None, "--epochs", help="instead of --steps: epochs × round(1/q) steps, as train runs"
    ),
    delta: float = typer.Option(1e-5, "--delta"),
    accountant: str = typer.Option("rdp", "--accountant", help="rdp | prv (gaussian)"),
    kappa: Optional[float] = typer.Option(None, "--kappa", help="VMF concentration κ (vmf)"),
    parts: Optional[int] = typer.Option(
        None,
        "--parts",
        help="VMF parts per gradient m (vmf; alone: only the pure bound; default 1)",
    ),
    part_dims: Optional[str] = typer.Option(
        None,
        "--part-dims",
        help="VMF parts' dimensions for the tight ε: D or D*N (N parts of "
        "dimension D), comma-separated, e.g. 25*6,150*16,256*120",
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        help="VMF: take the parts' dimensions from this registered model (with --partition): "
        "{models}",
    ),
    partition: Optional[str] = typer.Option(
        None, "--partition", help="whole | layer | row (with --model; default whole)"
    ),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="input shape and classes for --model (default mnist-5k)"
    ),
    units: Optional[int] = typer.Option(
        None, "--units", help="K classes/subclasses (class, subclass)"
    ),
    unit_sampling: str = typer.Option(
        "poisson", "--unit-sampling", help="poisson (add/remove unit) | fixed (replace unit)"
    ),
    k_sub: int = typer.Option(
        1, "--k-sub", help="subclasses per class (subclass): sets the record-level group size"
    ),
    n: Optional[int] = typer.Option(
        None, "--n", help="training records (gaussian, vmf): refuse δ ≥ 1/n, warn above 1/(10n)"
    ),
    vmf_mode: str = typer.Option(
        "alg2", "--vmf-mode", help="vmf: train.vmf_mode (only alg2 has a DP guarantee)"
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Compute ε from hyperparameters without training.

    Examples:

      privtool epsilon --mech gaussian --noise-multiplier 1.5 --sample-rate 0.04 --steps 2250 --delta 1e-5

      privtool epsilon --mech vmf --kappa 0.0707 --part-dims 300*50 --sample-rate 1 --steps 96 --json

      privtool epsilon --mech vmf --kappa 0.0707 --model lenet --partition row --sample-rate 0.05 --steps 10000

      privtool epsilon --mech subclass --noise-multiplier 1.6 --sample-rate 0.2 --steps 200 --delta 1e-3 --k-sub 50
    """
    from privtool.epsilon import compute_epsilon, vmf_part_dims

    dims, n_parts = vmf_part_dims(
        part_dims=part_dims, model=model, partition=partition, dataset=dataset, parts=parts
    )
    with err.status("VMF privacy-loss distribution…", spinner="dots") if dims else nullcontext():
        res = compute_epsilon(
            mech,
            sample_rate=sample_rate,
            steps=steps,
            epochs=epochs,
            delta=delta,
            noise_multiplier=noise_multiplier,
            accountant=accountant,
            kappa=kappa,
            parts=n_parts,
            n_units=units,
            unit_sampling=unit_sampling,
            k_sub=k_sub,
            part_dims=dims,
            n=n,
            vmf_mode=vmf_mode,
        )
    if "warning" in res:
        err.print(f"[yellow]warning:[/] {res['warning']}", highlight=False)
    if res.get("delta_warning"):
        err.print(f"[yellow]warning:[/] {res['delta_warning']}", highlight=False)
    emit(res, as_json, f"privtool epsilon --mech {mech}")


@app.command()
@handle_errors
def export(
    run: Path = typer.Argument(..., help="a train or select run directory"),
    out_dir: Path = typer.Option(..., "--out", help="folder to write (replaced whole)"),
    as_json: bool = JsonOpt,
) -> None:
    """Copy only what a run releases (weights, ε fields, accountant.json) to share it.

    Diagnostics computed on the private data without noise (train loss/accuracy, train gap,
    unit sizes, units.npy, plots/curve.csv) and bookkeeping (splits, params, seeds) are left
    out; the folder's meta.json lists them. See README "What ε covers".

    Examples:

      privtool export runs/g3 --out share/g3
    """
    from privtool.release import export_run

    res = export_run(run, out_dir)
    if res.get("warning"):
        err.print(f"[yellow]warning:[/] {res['warning']}", highlight=False)
    err.print(f"wrote {out_dir}", highlight=False)
    emit(res, as_json, f"privtool export {run} → {out_dir}")
