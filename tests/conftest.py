"""Shared fixtures: tiny trained digits runs, trained once per test session and reused.

Many tests need *a* trained run to attack, audit, tamper with or read, and do not care about
its private settings. ``digits_run("--mech", "gaussian")`` trains

    privtool train --mech gaussian --dataset digits --model mlp --epochs 2
                   --set train.batch_size=64 --set train.noise_seed=from-seed --json

(:data:`DIGITS_FAST` after the given flags) the first time a test asks for those flags, in a
session-wide temporary folder, and hands every later caller the same run. Runs with the same
flags are the same run (``noise_seed=from-seed``), so sharing changes no assertion.

Treat the returned ``dir`` as read-only; pass ``into=PATH`` to get a private copy to write
into (an audit or attack with its default output folder, a tampering test).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pytest

#: The flags every shared digits run is trained with (after the caller's own flags).
DIGITS_FAST = (
    "--dataset",
    "digits",
    "--model",
    "mlp",
    "--epochs",
    "2",
    "--set",
    "train.batch_size=64",
    "--set",
    "train.noise_seed=from-seed",
)


class TrainedRun(NamedTuple):
    """A trained run: its folder, ``privtool train --json``'s stdout and those metrics."""

    dir: Path
    stdout: str
    metrics: dict[str, Any]


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Callable[..., TrainedRun]:
    """``digits_run(*flags, into=None)``: the run ``privtool train *flags *DIGITS_FAST``,
    trained once per session per distinct ``flags``; ``into`` copies it to a fresh folder
    (which must not exist) and returns the copy."""
    from typer.testing import CliRunner

    from privtool.cli import app

    root = tmp_path_factory.mktemp("digits-runs")
    cache: dict[tuple[str, ...], TrainedRun] = {}

    def get(*flags: Any, into: str | Path | None = None) -> TrainedRun:
        key = tuple(str(f) for f in flags)
        if key not in cache:
            out = root / f"run-{len(cache)}"
            res = CliRunner().invoke(
                app, ["train", *key, *DIGITS_FAST, "--out", str(out), "--json"]
            )
            assert res.exit_code == 0, res.output
            cache[key] = TrainedRun(out, res.stdout, json.loads(res.stdout))
        run = cache[key]
        if into is None:
            return run
        shutil.copytree(run.dir, into)
        return run._replace(dir=Path(into))

    return get
