"""Write a :class:`~privtool.calibrate.tables.Calibration` into a directory:
calibration.md / .csv / .json, tables/*.csv, equivalent.csv, accuracy_matched.csv, plots."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from privtool.artifacts import dumps
from privtool.calibrate.plots import write_plots
from privtool.calibrate.table import fmt
from privtool.calibrate.tables import Calibration

MARKDOWN = "calibration.md"
CSV = "calibration.csv"
JSON = "calibration.json"


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from privtool.artifacts import write_csv

    write_csv(path, rows)


def markdown(cal: Calibration, plots: list[str]) -> str:
    """calibration.md: every table, the equivalent-ε sentences, plots, provenance, warnings."""
    cfg = cal.settings
    out = [
        f"# Calibration of `{cal.root}`",
        "",
        f"{len(cal.rows)} rows from {cal.metrics()['n_runs']} runs and "
        f"{cal.metrics()['n_attack_results']} attack results. Baseline mechanism: "
        f"`{cfg.baseline}`; score intervals at {cfg.confidence:.0%}; accuracy match "
        f"±{cfg.accuracy_tolerance:g}. Every row names its run (`target`) and the first 12 "
        f"hex digits of its meta.json sha256; `{CSV}` and `{JSON}` hold the full hashes, "
        f"every attack directory and each score's interval.",
        "",
    ]
    by_name = {t.name: t for t in cal.tables}
    out += ["## Runs", "", by_name["runs"].to_markdown(), by_name["epsilon"].to_markdown()]
    out += ["## Paper 1 views (Tables 4–7)", ""]
    for name in ("table4_accuracy", "table5_membership", "table6_reconstruction", "table7_delta"):
        out.append(by_name[name].to_markdown())
    out += ["## Equivalent ε", ""]
    sentences = [f"- {r['text']}" for r in cal.equivalent if r.get("relation")]
    out += [*sentences, ""] if sentences else []
    out.append(by_name["equivalent"].to_markdown())
    out += ["## Accuracy-matched comparison", "", by_name["accuracy_matched"].to_markdown()]
    for t in cal.tables:  # any table a later version adds
        if t.name not in {
            "runs",
            "epsilon",
            "table4_accuracy",
            "table5_membership",
            "table6_reconstruction",
            "table7_delta",
            "equivalent",
            "accuracy_matched",
        }:
            out.append(t.to_markdown())
    if plots:
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    if cal.curves:
        out += ["## Select curves (not tabulated)", ""] + [f"- `{c}`" for c in cal.curves] + [""]
    out += ["## Sources", "", "| dir | stage | meta sha256 |", "|---|---|---|"]
    out += [
        f"| `{s['dir']}` | {s['stage']}{' ' + s['attack'] if s.get('attack') else ''} | "
        f"{s['meta_sha256'][:12]} |"
        for s in cal.sources
    ]
    out.append("")
    if cal.warnings:
        out += ["## Warnings", ""] + [f"- {w}" for w in cal.warnings] + [""]
    return "\n".join(out)


def write_outputs(cal: Calibration, dest: Path) -> list[str]:
    """Write everything into ``dest`` (a staged directory); returns the files written."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    pngs = [str(p.relative_to(dest)) for p in write_plots(cal.rows, dest, cal.settings)]
    for t in cal.tables:
        _csv(
            dest / "tables" / f"{t.name}.csv",
            [
                {c: fmt(v) if isinstance(v, float) else v for c, v in rec.items()}
                for rec in t.records()
            ]
            or [{c: None for c in t.columns}],
        )
    _csv(dest / CSV, [r.fields for r in cal.rows])
    _csv(dest / "equivalent.csv", cal.equivalent or [{"target": None}])
    _csv(dest / "accuracy_matched.csv", cal.accuracy_matched or [{"dataset": None}])
    doc = {
        "root": str(cal.root),
        "settings": asdict(cal.settings),
        "rows": [r.fields for r in cal.rows],
        "tables": [t.as_dict() for t in cal.tables],
        "equivalent": cal.equivalent,
        "accuracy_matched": cal.accuracy_matched,
        "sources": cal.sources,
        "curves": cal.curves,
        "plots": pngs,
        "warnings": cal.warnings,
    }
    (dest / JSON).write_text(dumps(doc))
    (dest / MARKDOWN).write_text(markdown(cal, pngs))
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
