"""Stage ``report``: a results folder -> one self-contained HTML page (+ its Markdown twin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from privtool.report import render


def run(folder: str | Path, out: str | Path, raw_params: Mapping[str, Any]) -> dict[str, Any]:
    """Render ``folder`` (a calibration, or runs to calibrate in memory) into ``out``."""
    return render(folder, out, raw_params=raw_params)
