"""Pieces every stage needs: data + recorded splits, and writing a run directory."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Mapping

from privtool.artifacts import META, METRICS, dumps, file_hash, versions, write_csv  # noqa: F401
from privtool.data.recorded import load_data_and_splits, split_record  # noqa: F401


def finish_run(
    tmp: Path,
    *,
    stage: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    inputs: Mapping[str, Any],
    device: str,
    payload: list[str],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write metrics.json and meta.json (with content hashes of the payload files) into the
    staged directory ``tmp``; the caller's :func:`staged_dir` then moves it into place."""
    (tmp / METRICS).write_text(dumps(metrics))
    meta = {
        "stage": stage,
        "params": params,
        "inputs": inputs,
        "device": device,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "outputs": {name: file_hash(tmp / name) for name in dict.fromkeys([METRICS, *payload])},
    }
    if extra:
        meta.update(extra)
    (tmp / META).write_text(dumps(meta))
