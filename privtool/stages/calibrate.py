"""Stage ``calibrate``: a folder of runs and attack results -> calibration tables and plots."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from privtool.artifacts import check_out, staged_dir
from privtool.calibrate import build, calibrate_settings, collect
from privtool.calibrate.output import write_outputs
from privtool.stages.common import finish_run


def run(runs: str | Path, out: str | Path, raw_params: Mapping[str, Any]) -> dict[str, Any]:
    """Calibrate every run and attack under ``runs`` into ``out`` (written atomically).

    Returns the metrics (counts) plus ``equivalent`` (one sentence per run and attack) and
    ``warnings`` for the command line to print.
    """
    cfg = calibrate_settings(raw_params.get("calibrate"))
    check_out(out)
    col = collect(runs)
    cal = build(col, cfg)
    metrics = cal.metrics()
    with staged_dir(out) as tmp:
        payload = write_outputs(cal, tmp)
        finish_run(
            tmp,
            stage="calibrate",
            params={"calibrate": asdict(cfg)},
            metrics=metrics,
            inputs={
                "runs": str(runs),
                "sources": {s["dir"]: s["meta_sha256"] for s in cal.sources},
            },
            device="cpu",
            payload=payload,
        )
    return {**metrics, "equivalent": [e["text"] for e in cal.equivalent], "warnings": cal.warnings}
