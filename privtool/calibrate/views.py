"""Calibration view of which classes and records each membership attack exposes (issue 20):
one row per attacked model and membership attack, read from the attack's own metrics
(``per_class``, ``records_exposed_at_*``; :mod:`privtool.attacks.views`)."""

from __future__ import annotations

from collections.abc import Sequence

from privtool.calibrate.rows import Row, all_attacks, row_order
from privtool.calibrate.settings import CalibrateConfig
from privtool.calibrate.table import Table


def membership_views_table(rows: Sequence[Row], cfg: CalibrateConfig) -> Table:
    """Per run × membership attack: AUC, the class the attack separates best and its AUC, and
    how many training records it catches at 0.1 % and 1 % FPR (records.csv has them all)."""
    names = [n for n, kind in all_attacks(rows, cfg) if kind == "membership"]
    cols = [
        "target",
        "series",
        "ε nominal",
        "attack",
        "AUC",
        "most exposed class",
        "class AUC",
        "records caught @0.1% FPR",
        "@1% FPR",
        "members scored",
        "top records (dataset index)",
    ]
    body = []
    for r in sorted(rows, key=lambda r: row_order(r, cfg)):
        for name in names:
            a = r.attacks.get(name)
            res = a.result if a is not None else None
            if res is None or res.views is None:
                continue
            v = res.views
            body.append(
                [
                    r["target"],
                    r["series"],
                    r["epsilon_nominal"],
                    name,
                    res.scores.auc,
                    v.most_exposed_class,
                    v.most_exposed_class_auc,
                    v.records_exposed.get(0.001),
                    v.records_exposed.get(0.01),
                    res.scores.n_in,
                    " ".join(str(i) for i in (v.top_exposed_index or [])[:5]),
                ]
            )
    return Table(
        "membership_views",
        "Membership: which classes and records leak",
        cols,
        body,
        note="Per class: the attack scored on one class's members and non-members "
        "(per_class.csv in the attack dir). A record is caught at f % FPR when the "
        "threshold at its own score flags under f % of non-members "
        "(records.csv: exposure). grids/<attack>-<mechanism>.png show the 16 most "
        "exposed training records of each run.",
    )
