"""Calibration plots (matplotlib Agg, PNG) and the CSVs behind them (declared as DVC plots).

* frontier: test accuracy against each attack score, one line per mechanism (paper 3 Fig. 6),
  beside nominal ε against the score (paper 3 Figs 7b/8b);
* ROC overlays: every run's ROC of one membership attack, from the attack dirs' plots/roc.csv;
* grids: the reconstruction / inversion grids of one attack gathered per mechanism, by ε.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

from privtool.calibrate.rows import Row, all_attacks, row_order
from privtool.calibrate.scores import SCORES, Score
from privtool.calibrate.settings import CalibrateConfig
from privtool.calibrate.table import fmt


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from privtool.artifacts import write_csv

    write_csv(path, rows)


def _groups(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows by line label: the mechanism, plus model/dataset when the rows mix several."""
    combos = {(r["model"], r["dataset"]) for r in rows}
    out: dict[str, list[Row]] = {}
    for r in rows:
        label = str(r["series"]) + (f" {r['model']}/{r['dataset']}" if len(combos) > 1 else "")
        out.setdefault(label, []).append(r)
    return out


def _eps_label(v: Any) -> str:
    return "∞" if not isinstance(v, (int, float)) else fmt(float(v))


def frontier(
    rows: Sequence[Row], attack: str, s: Score, png: Path, csv_path: Path, cfg: CalibrateConfig
) -> bool:
    """Accuracy vs ``attack``'s score ``s`` and ε vs the score; False if nothing to plot."""
    pts = [r for r in rows if r[f"{attack}_{s.key}"] is not None and r["test_accuracy"] is not None]
    if not pts:
        return False
    pts = sorted(pts, key=lambda r: row_order(r, cfg))
    _write_csv(
        csv_path,
        [
            {
                "label": lab,
                "series": r["series"],
                "dataset": r["dataset"],
                "model": r["model"],
                "target": r["target"],
                "epsilon_nominal": r["epsilon_nominal"],
                "test_accuracy": r["test_accuracy"],
                "score": r[f"{attack}_{s.key}"],
                "score_low": r[f"{attack}_{s.key}_low"],
                "score_high": r[f"{attack}_{s.key}_high"],
            }
            for lab, grp in _groups(pts).items()
            for r in grp
        ],
    )
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for lab, grp in _groups(pts).items():
        xs = [r[f"{attack}_{s.key}"] for r in grp]
        ys = [r["test_accuracy"] for r in grp]
        lo = [r[f"{attack}_{s.key}_low"] for r in grp]
        hi = [r[f"{attack}_{s.key}_high"] for r in grp]
        err = None
        if all(v is not None for v in (*lo, *hi)):
            err = [[max(x - l, 0) for x, l in zip(xs, lo)], [max(h - x, 0) for x, h in zip(xs, hi)]]
        line = ax.errorbar(xs, ys, xerr=err, marker="o", capsize=2, label=lab)
        for r, x, y in zip(grp, xs, ys):
            ax.annotate(
                _eps_label(r["epsilon_nominal"]),
                (x, y),
                textcoords="offset points",
                xytext=(3, 3),
                fontsize=7,
            )
        colour = line[0].get_color()
        finite = [
            (r["epsilon_nominal"], x)
            for r, x in zip(grp, xs)
            if isinstance(r["epsilon_nominal"], (int, float)) and r["epsilon_nominal"] > 0
        ]
        if finite:
            bx.plot(
                [e for e, _ in finite], [x for _, x in finite], marker="o", color=colour, label=lab
            )
        else:
            for x in xs:
                bx.axhline(x, color=colour, linestyle=":", label=f"{lab} (no ε)")
    ax.set_xlabel(f"{attack} {s.label} ({'higher' if s.leak > 0 else 'lower'} = more leakage)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"privacy–utility frontier: {attack} {s.label}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    bx.set_xscale("log")
    bx.set_xlabel("nominal ε (each mechanism's own)")
    bx.set_ylabel(f"{attack} {s.label}")
    bx.set_title("nominal ε vs attack score")
    bx.grid(alpha=0.3)
    if bx.get_legend_handles_labels()[0]:
        bx.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def _read_roc(path: Path) -> tuple[list[float], list[float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [float(r["fpr"]) for r in rows], [float(r["tpr"]) for r in rows]


def roc_overlay(
    rows: Sequence[Row], attack: str, png: Path, csv_path: Path, cfg: CalibrateConfig
) -> bool:
    """Every row's ROC for membership ``attack`` (linear and log-log); False if none."""
    curves = []
    for r in sorted(rows, key=lambda r: row_order(r, cfg)):
        a = r.attacks.get(attack)
        path = a.verified("plots/roc.csv") if a is not None else None
        if path is None:
            continue
        fpr, tpr = _read_roc(path)
        label = f"{r['series']} ε={_eps_label(r['epsilon_nominal'])} {r['model']}" + (
            f"@{r['checkpoint']}" if r["checkpoint"] is not None else ""
        )
        curves.append((r, label, fpr, tpr))
    if not curves:
        return False
    _write_csv(
        csv_path,
        [
            {"target": r["target"], "label": lab, "fpr": f, "tpr": t}
            for r, lab, fpr, tpr in curves
            for f, t in zip(fpr, tpr)
        ],
    )
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r, lab, fpr, tpr in curves:
        auc = r[f"{attack}_auc"]
        full = f"{lab} (AUC {auc:.3f})" if auc is not None else lab
        ax.plot(fpr, tpr, label=full, linewidth=1)
        keep = [(f, t) for f, t in zip(fpr, tpr) if f > 0 and t > 0]
        if keep:
            bx.plot(*zip(*keep), linewidth=1)
    for axis in (ax, bx):
        axis.plot([1e-4, 1], [1e-4, 1], color="grey", linestyle=":", linewidth=0.8)
        axis.set_xlabel("false positive rate")
        axis.set_ylabel("true positive rate")
        axis.grid(alpha=0.3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlim(1e-3, 1)
    bx.set_ylim(1e-3, 1)
    ax.set_title(f"{attack}: ROC of every run")
    bx.set_title("log-log (low FPR)")
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def grids(rows: Sequence[Row], attack: str, out_dir: Path, cfg: CalibrateConfig) -> list[Path]:
    """One PNG per mechanism stacking ``attack``'s grid.png of its runs, smallest ε first."""
    import matplotlib.image as mpimg

    by_series: dict[str, list[tuple[Row, Path]]] = {}
    for r in sorted(rows, key=lambda r: row_order(r, cfg)):
        a = r.attacks.get(attack)
        path = a.verified("grid.png") if a is not None else None
        if path is not None:
            by_series.setdefault(str(r["series"]), []).append((r, path))
    written = []
    plt = _plt()
    for series, items in by_series.items():
        images = [mpimg.imread(p) for _, p in items]
        heights = [max(im.shape[0] / im.shape[1], 0.05) * 9 + 0.4 for im in images]
        fig, axes = plt.subplots(
            len(images),
            1,
            figsize=(9, min(sum(heights), 60)),
            gridspec_kw={"height_ratios": heights},
            squeeze=False,
        )
        for ax, (r, _), im in zip(axes[:, 0], items, images):
            ax.imshow(im)
            ax.set_axis_off()
            title = (
                f"{r['target']}: {r['series']} ε={_eps_label(r['epsilon_nominal'])}, "
                f"{r['model']}/{r['dataset']}, test acc {fmt(r['test_accuracy'])}"
            )
            ax.set_title(title, fontsize=8)
        fig.suptitle(f"{attack} grids, {series}", fontsize=10)
        fig.tight_layout()
        png = out_dir / f"{attack}-{_safe(series)}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=100)
        plt.close(fig)
        written.append(png)
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def write_plots(rows: Sequence[Row], out: Path, cfg: CalibrateConfig) -> list[Path]:
    """Every plot into ``out`` (frontier-*.png, roc-*.png, grids/*.png, plots/**.csv)."""
    written: list[Path] = []
    for attack, kind in all_attacks(rows, cfg):
        for s in SCORES[kind]:
            stem = f"{attack}-{_safe(s.key)}"
            png = out / f"frontier-{stem}.png"
            if frontier(rows, attack, s, png, out / "plots" / "frontier" / f"{stem}.csv", cfg):
                written.append(png)
        # whatever the attack dirs hold: ROC curves (membership), image grids (the others)
        png = out / f"roc-{attack}.png"
        if roc_overlay(rows, attack, png, out / "plots" / "roc" / f"{attack}.csv", cfg):
            written.append(png)
        written += grids(rows, attack, out / "grids", cfg)
    return written
