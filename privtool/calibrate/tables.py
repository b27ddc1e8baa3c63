"""Calibration's result: rows (:mod:`privtool.calibrate.rows`), the tables derived from them
(paper 1's Tables 4–7 and the overview in :mod:`privtool.calibrate.paper`, the equivalent-ε
and accuracy-matched comparisons in :mod:`privtool.calibrate.comparisons`, the membership
views), and where every input came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privtool.calibrate.collect import Artifact, AttackDir, Collection
from privtool.calibrate.commands import reproduce
from privtool.calibrate.comparisons import (
    accuracy_matched_rows,
    accuracy_matched_table,
    equivalent_rows,
    equivalent_table,
)
from privtool.calibrate.paper import (
    epsilon_table,
    runs_table,
    sandwich_table,
    table4_accuracy,
    table5_membership,
    table6_reconstruction,
    table7_delta,
)
from privtool.calibrate.rows import Row, build_rows
from privtool.calibrate.settings import CalibrateConfig
from privtool.calibrate.table import Table


@dataclass
class Calibration:
    """Everything ``privtool calibrate`` writes, before plotting."""

    root: Path
    settings: CalibrateConfig
    rows: list[Row]
    tables: list[Table]
    equivalent: list[dict[str, Any]]
    accuracy_matched: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    curves: list[str]
    warnings: list[str]

    def metrics(self) -> dict[str, Any]:
        """Counts only (metrics.json is numbers); the numbers themselves are in the tables."""
        return {
            "n_rows": len(self.rows),
            "n_runs": sum(1 for s in self.sources if s["stage"] in ("train", "select")),
            "n_attack_results": sum(1 for s in self.sources if s["stage"] == "attack"),
            "n_audits": sum(1 for s in self.sources if s["stage"] == "audit"),
            "n_equivalent": len(self.equivalent),
            "n_accuracy_matched": len(self.accuracy_matched),
            "n_warnings": len(self.warnings),
        }


def source_record(a: Artifact) -> dict[str, Any]:
    """Provenance of one input directory and the command that remakes it."""
    rec: dict[str, Any] = {
        "dir": str(a.dir),
        "stage": a.stage,
        "meta_sha256": a.meta_sha256,
        "created": a.meta.get("created"),
    }
    if a.stage == "audit" and isinstance(a, AttackDir):
        target = a.target_dir if a.target_epoch is None else f"{a.target_dir}@{a.target_epoch}"
        rec.update(
            {
                "kind": "audit",
                "target": target,
                "target_meta_sha256": a.target_meta_sha256,
                "command": reproduce("audit", a.params, str(a.dir), target=target),
            }
        )
    elif isinstance(a, AttackDir):
        target = a.target_dir if a.target_epoch is None else f"{a.target_dir}@{a.target_epoch}"
        rec.update(
            {
                "attack": a.name,
                "kind": a.kind,
                "target": target,
                "target_meta_sha256": a.target_meta_sha256,
                "command": reproduce("attack", a.params, str(a.dir), target=target, attack=a.name),
            }
        )
    elif a.stage == "select":
        parent = ((a.meta.get("inputs") or {}).get("parent") or {}).get("spec")
        rec.update(
            {
                "parent": parent,
                "mechanism": a.metrics.get("mechanism"),
                "command": reproduce("select", a.params, str(a.dir), target=parent or "PARENT_RUN"),
            }
        )
    else:
        rec.update(
            {
                "mechanism": a.metrics.get("mechanism"),
                "command": reproduce("train", a.params, str(a.dir)),
            }
        )
    sections = {
        "train": ("data", "train", "pretrain"),
        "select": ("select",),
        "attack": ("attack",),
        "audit": ("audit",),
    }[a.stage]
    rec["settings"] = {k: a.params.get(k) for k in sections if k in a.params}
    if a.stage in ("train", "select") and a.metrics.get("noise"):
        rec["noise"] = a.metrics["noise"]  # secret or reproducible (privtool.release)
    return rec


def build(col: Collection, cfg: CalibrateConfig) -> Calibration:
    """Rows, paper views, equivalent ε and the accuracy-matched comparison of ``col``."""
    from privtool.mechanisms.base import is_private  # lazily: reading results needs no torch

    rows = build_rows(col, cfg)
    for r in rows:
        eps = r["epsilon_nominal"]
        if is_private(r["mechanism"]) and not (
            isinstance(eps, (int, float))
            and not isinstance(eps, bool)
            and math.isfinite(eps)
            and eps > 0
        ):
            col.warnings.append(
                f"{r['target']}: no valid ε in its metrics "
                f"({r['epsilon_nominal_source'] or 'no ε field'} = {eps!r}); "
                f"its row has no nominal ε and no {cfg.baseline} comparison "
                f"uses it as a reference point"
            )
            r.fields["epsilon_nominal"] = None
    eq = equivalent_rows(rows, cfg)
    matched = accuracy_matched_rows(rows, cfg)
    tables = [
        runs_table(rows, cfg),
        epsilon_table(rows),
        table4_accuracy(rows, cfg),
        table5_membership(rows, cfg),
        table6_reconstruction(rows, cfg),
        table7_delta(rows, cfg),
        equivalent_table(eq, cfg),
        accuracy_matched_table(matched, cfg),
    ]
    from privtool.calibrate.views import membership_views_table

    tables.append(membership_views_table(rows, cfg))
    if col.audits:
        tables.insert(2, sandwich_table(rows))
    return Calibration(
        root=col.root,
        settings=cfg,
        rows=rows,
        tables=tables,
        equivalent=eq,
        accuracy_matched=matched,
        sources=[source_record(a) for a in col.sources()],
        curves=[str(c.dir) for c in col.curves],
        warnings=list(col.warnings),
    )
