"""The table model of calibration: a titled table of raw cells rendered as Markdown (HTML and
CSV in :mod:`privtool.calibrate.output`), and how one cell is written."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Table:
    """A titled table of raw cells (numbers, strings, None); rendered as Markdown, HTML, CSV."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "note": self.note,
        }

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r)) for r in self.rows]

    def to_markdown(self) -> str:
        out = [f"### {self.title}", ""]
        if self.note:
            out += [self.note, ""]
        if not self.rows:
            return "\n".join(out + ["(no rows)", ""])
        out.append("| " + " | ".join(_md(c) for c in self.columns) + " |")
        out.append("|" + "|".join("---" for _ in self.columns) + "|")
        out += ["| " + " | ".join(_md(fmt(v)) for v in r) + " |" for r in self.rows]
        return "\n".join(out + [""])


def fmt(v: Any) -> str:
    """A cell as text: 4 significant digits, "—" for missing, "∞" for infinity."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if math.isnan(v):
            return "—"
        if v.is_integer() and abs(v) < 1e7:
            return str(int(v))
        return f"{v:.4g}"
    return str(v)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def short_hash(h: Any) -> str:
    return str(h)[:12] if h else "—"


def mean_of(vals: list[float]) -> float | None:
    vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def percent(v: Any) -> float | None:
    return None if v is None else round(100 * v, 1)


def round_sig(v: Any, digits: int = 3) -> float | None:
    """``v`` to ``digits`` significant digits (paper-style cells without losing small MSEs)."""
    if v is None or not math.isfinite(v) or v == 0:
        return v
    return round(v, digits - 1 - int(math.floor(math.log10(abs(v))))) + 0.0


def interval_text(lo: Any, hi: Any) -> str:
    if lo is None and hi is None:
        return "—"
    return f"[{fmt(lo)}, {'∞' if hi is None else fmt(hi)}]"
