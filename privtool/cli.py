"""The ``privtool`` command line: thin Typer commands over the library.

Each command parses options, calls one library function and prints. A
:class:`~privtool.errors.PrivtoolError` becomes one line on stderr and exit code 1; usage
errors exit 2. ``--json`` puts exactly one JSON object on stdout; progress goes to stderr.
Torch and the library are imported inside commands so ``privtool --help`` is instant.
"""

from __future__ import annotations

import functools
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from privtool.errors import PrivtoolError

app = typer.Typer(
    name="privtool",
    help="Train under differential privacy (none / gaussian / vmf), attack, select, calibrate.\n\n"
    "Examples:\n\n"
    "  privtool train --mech vmf\n\n"
    "  privtool train --mech gaussian --epsilon 3 --dataset mnist --model lenet --out runs/g3\n\n"
    "  privtool epsilon --mech gaussian --noise-multiplier 1.5 --sample-rate 0.04 --steps 2250\n\n"
    "  privtool data list",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(
    help="List, download (prepare) and check (verify) datasets.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(data_app, name="data")

err = Console(stderr=True)
out = Console()


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map PrivtoolError to a one-line message and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PrivtoolError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1)
        except KeyboardInterrupt:
            err.print("interrupted; nothing was written")
            raise typer.Exit(130)

    return wrapper


def emit(metrics: dict[str, Any], as_json: bool, title: str) -> None:
    """Print a stage's metrics: one JSON object on stdout with --json, else a table."""
    from privtool.artifacts import dumps

    if as_json:
        sys.stdout.write(json.dumps(json.loads(dumps(metrics)), sort_keys=True) + "\n")
        return
    table = Table(title=title, show_header=False)
    for k in sorted(metrics):
        v = metrics[k]
        table.add_row(
            k,
            f"{v:.6g}"
            if isinstance(v, float)
            else ("∞" if v is None and "epsilon" in k else str(v)),
        )
    out.print(table)


class RichProgress:
    """A rich progress bar on stderr: epoch, step, loss, accuracy, ε so far."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def start(self, total: int, description: str) -> None:
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=err,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, info="")

    def advance(self, **f: Any) -> None:
        if self._bar is None:
            return
        parts = []
        for k, v in f.items():
            if k.startswith("_"):
                continue
            if k == "eps":
                parts.append(f"ε {'∞' if v is None else f'{v:.3g}'}")
            elif isinstance(v, float):
                parts.append(f"{k} {v:.3f}")
            elif v is not None:
                parts.append(f"{k} {v}")
        self._bar.update(self._task, advance=0 if f.get("_refresh") else 1, info=" ".join(parts))

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _params(params: Path, sets: list[str], extra: list[str]) -> Any:
    from privtool.config import load_params

    explicit = str(params) != "params.yaml"
    return load_params(params, [*sets, *extra], required=explicit)


ParamsOpt = typer.Option(
    Path("params.yaml"), "--params", "-p", help="params file (sections data:, train:, ...)"
)
SetOpt = typer.Option(None, "--set", help="override a param: section.key=value (repeatable)")
JsonOpt = typer.Option(False, "--json", help="print the metrics as one JSON object on stdout")
SeedOpt = typer.Option(None, "--seed", help="random seed of this stage (<section>.seed)")
DeviceOpt = typer.Option(None, "--device", help="auto | cpu | cuda")


@app.command()
@handle_errors
def train(
    mech: Optional[str] = typer.Option(
        None, "--mech", help="none | gaussian | vmf | class | subclass"
    ),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="see `privtool data list`"),
    model: Optional[str] = typer.Option(
        None, "--model", help="lenet | mlp | cnn | softmax | tfp-cnn"
    ),
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


@app.command()
@handle_errors
def epsilon(
    mech: str = typer.Option(..., "--mech", help="gaussian | vmf | class | subclass"),
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
        help="VMF: take the parts' dimensions from this registered model (with --partition)",
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


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)


def _eps_text(e: Any) -> str:
    return "∞" if e is None else f"{e:.4g}"


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


RootOpt = typer.Option(None, "--root", help="data root (default: $PRIVTOOL_DATA)")


@data_app.command("list")
@handle_errors
def data_list(root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Every dataset: available offline?, size, and the files a missing one needs."""
    from privtool.data import list_datasets

    rows = list_datasets(root)
    if as_json:
        sys.stdout.write(json.dumps({"datasets": [_status_dict(s) for s in rows]}) + "\n")
        return
    table = Table(title="privtool datasets")
    for col in ("name", "available", "examples", "shape", "classes", "what / what is missing"):
        table.add_column(col)
    for s in rows:
        note = (
            s.description
            if s.available
            else "; ".join(s.missing[:4])
            + (f" (+{len(s.missing) - 4} more)" if len(s.missing) > 4 else "")
            + f" — {s.how}"
        )
        table.add_row(
            s.name,
            "yes" if s.available else "no",
            "" if s.n_examples is None else str(s.n_examples),
            "×".join(map(str, s.shape)) if s.shape else "",
            "" if s.n_classes is None else str(s.n_classes),
            note,
        )
    out.print(table)


def _status_dict(s: Any) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(s)
    d["shape"] = list(d["shape"]) if d.get("shape") else None
    return d


@data_app.command("prepare")
@handle_errors
def data_prepare(name: str, root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Download NAME into the data root with torchvision (needs internet), then load it."""
    from privtool.data import data_root, load_dataset

    r = data_root(root)
    if r is None:
        raise PrivtoolError("no data root: pass --root DIR or set PRIVTOOL_DATA")
    d = load_dataset(name, r, download=True)
    emit(
        {
            "dataset": d.name,
            "n_examples": len(d.y),
            "n_classes": d.n_classes,
            "fingerprint": d.fingerprint(),
            "source": d.source,
        },
        as_json,
        f"prepared {name}",
    )


@data_app.command("verify")
@handle_errors
def data_verify(name: str, root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Load NAME offline and print its size, class counts and content fingerprint."""
    import numpy as np

    from privtool.data import data_root, load_dataset

    d = load_dataset(name, data_root(root))
    counts = np.bincount(d.y, minlength=d.n_classes)
    emit(
        {
            "dataset": d.name,
            "n_examples": int(len(d.y)),
            "n_classes": int(d.n_classes),
            "shape": "×".join(map(str, d.shape)),
            "min_class_count": int(counts.min()),
            "max_class_count": int(counts.max()),
            "fingerprint": d.fingerprint(),
            "source": d.source,
        },
        as_json,
        f"verified {name}",
    )


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (DVC, CI, ``kill``) ends a stage like Ctrl-C: the staged output is removed and
    ``--out`` keeps its previous run."""
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
