"""``privtool data list | prepare | verify``: the datasets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from privtool.cli.common import (
    JsonOpt,
    data_app,
    emit,
    handle_errors,
    out,
)
from privtool.errors import PrivtoolError

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
