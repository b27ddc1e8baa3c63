"""What every ``privtool`` command shares: the Typer app, error handling, output, progress
and the common options (the commands live in the sibling modules of :mod:`privtool.cli`)."""

from __future__ import annotations

import functools
import json
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, Callable

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

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

#: placeholders an option's help may hold, filled with a registry's names when the help is shown
#: (importing the registry imports torch, so ``privtool --help`` stays instant)
REGISTRY_HELP = {
    "{mechanisms}": ("privtool.mechanisms", "MECHANISMS"),
    "{models}": ("privtool.models", "MODELS"),
}


def registry_choices(placeholder: str) -> str:
    """``a | b | c``: every name in the registry behind ``placeholder``, plug-ins included."""
    from privtool.plugins import load_plugins

    load_plugins()
    module, name = REGISTRY_HELP[placeholder]
    return " | ".join(getattr(import_module(module), name).names())


class RegistryCommand(TyperCommand):
    """A command whose options' help lists registry names (``{mechanisms}``, ``{models}``),
    filled in when its help is formatted: the registries (and plug-ins) decide, not the CLI."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for param in self.params:
            text = getattr(param, "help", None)
            for key in REGISTRY_HELP:
                if text and key in text:
                    text = text.replace(key, registry_choices(key))
                    param.help = text  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


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


@app.callback()
@handle_errors
def _load_plugins() -> None:
    # Runs before any command (and before a command's --help is formatted): third-party
    # mechanisms and models register themselves (privtool.plugins). No docstring: it would
    # replace the app's help.
    from privtool.plugins import load_plugins

    load_plugins()


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


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)


def _eps_text(e: Any) -> str:
    return "∞" if e is None else f"{e:.4g}"
