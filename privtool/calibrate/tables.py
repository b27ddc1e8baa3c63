"""Join runs and attack results into one row per attacked model, and derive the views.

A row is a run (``train`` or ``select``) at its final weights, or at a checkpoint an attack
targeted (``RUN_DIR@EPOCH``). It carries the run directory and its meta.json hash, the
mechanism and every ε field, utility, and for each attack on it that attack's scores with
their intervals and directory — so every number traces back to the artifact it came from.
Paper 1's Tables 4–7, the equivalent-ε table and paper 3's accuracy-matched comparison are
views of these rows.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from privtool.artifacts import META, file_hash
from privtool.calibrate.collect import Artifact, AttackResult, Collection, load_artifact
from privtool.calibrate.commands import reproduce
from privtool.calibrate.equivalent import equivalent_epsilon
from privtool.calibrate.scores import SCORES, Score, score
from privtool.calibrate.settings import CalibrateConfig

KIND_ORDER = tuple(SCORES)
#: metrics of a select run worth a column (generic: whatever of these the stage wrote)
SELECT_KEYS = ("strategy", "n_labeled", "parent_test_accuracy", "accuracy_gain", "labels_revealed")


# --------------------------------------------------------------------------------- tables


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


# ----------------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One attacked model: the row's fields and the attack results behind its columns."""

    fields: dict[str, Any]
    attacks: dict[str, AttackResult] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields.get(key)

    @property
    def final(self) -> bool:
        return self.fields.get("checkpoint") is None

    def score(self, attack: str, key: str) -> tuple[Any, Any, Any]:
        return (
            self.fields.get(f"{attack}_{key}"),
            self.fields.get(f"{attack}_{key}_low"),
            self.fields.get(f"{attack}_{key}_high"),
        )


def _target_spec(run_dir: str, epoch: int | None) -> str:
    return run_dir if epoch is None else f"{run_dir}@{epoch}"


def nominal_epsilon(
    stage: str, mechanism: str | None, m: dict[str, Any], target: Any, cfg: CalibrateConfig
) -> tuple[Any, str]:
    """(nominal ε, where it came from). Select runs: their composed ε. ``calibrate.nominal``
    names a field per mechanism (VMF: the per-update ε_V of paper 1); otherwise the ε the run
    was trained to (train.epsilon, final weights only), else its headline ε field."""
    if stage == "select":
        return m.get("epsilon"), "epsilon (composed)"
    if "epsilon_v_setting" in m:  # a VMF mode with no DP guarantee: paper 1's ε_V label only
        return m["epsilon_v_setting"], "epsilon_v_setting (no DP guarantee)"
    key = cfg.nominal.get(mechanism or "")
    if key:
        return m.get(key), key
    if target is not None:
        return target, "train.epsilon (target)"
    for key in (f"epsilon_{mechanism}", "epsilon"):
        if key in m:
            return m[key], key
    return None, ""


def _base_fields(
    *,
    run: str,
    meta_sha256: str | None,
    stage: str,
    epoch: int | None,
    m: dict[str, Any],
    top: dict[str, Any],
    target_eps: Any,
    n_classes: Any,
    cfg: CalibrateConfig,
    source: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    mech = top.get("mechanism")
    strategy = extra.get("strategy")
    series = mech if stage != "select" else f"{mech}+{strategy or 'select'}"
    if top.get("vmf_mode") not in (None, "alg2"):  # paper 1 §3.4 readings (vmf_modes)
        series = series.replace(str(mech), f"{mech}:{top['vmf_mode']}", 1)
    if top.get("dp_guarantee") == "none":
        series += " (no DP guarantee)"
    nominal, nominal_source = nominal_epsilon(stage, mech, m, target_eps, cfg)
    f: dict[str, Any] = {
        "target": _target_spec(run, epoch),
        "run": run,
        "run_meta_sha256": meta_sha256,
        "stage": stage,
        "checkpoint": epoch,
        "dataset": top.get("dataset"),
        "model": top.get("model"),
        "mechanism": mech,
        "series": series,
        "n_classes": n_classes,
        "epsilon_nominal": nominal,
        "epsilon_nominal_source": nominal_source,
    }
    if top.get("dp_guarantee") is not None:
        f["dp_guarantee"] = top["dp_guarantee"]
    f.update(
        {
            k: m[k]
            for k in sorted(m)
            if k.startswith("epsilon") and not isinstance(m[k], (dict, list, str))
        }
    )
    f["delta"] = m.get("delta")
    f["noise"] = top.get("noise")  # how the DP noise was drawn (privtool.release)
    f["test_accuracy"] = m.get("test_accuracy")
    tops = [k for k in sorted(m) if "top10" in k or "top_10" in k]
    f["test_top10_accuracy"] = m.get(tops[0]) if tops else None
    f["train_accuracy"] = m.get("train_accuracy")
    f["train_gap"] = m.get("train_gap")
    if f["train_gap"] is None and None not in (f["train_accuracy"], f["test_accuracy"]):
        f["train_gap"] = f["train_accuracy"] - f["test_accuracy"]
    f.update(extra)
    f["source"] = source
    return f


def run_fields(run: Artifact, epoch: int | None, cfg: CalibrateConfig) -> dict[str, Any]:
    """A row's fields from a train/select run directory (at a checkpoint if ``epoch``)."""
    m = run.metrics
    if epoch is not None:
        entry = next((c for c in m.get("checkpoints") or [] if c.get("epoch") == epoch), None)
        m = dict(entry) if entry is not None else {}
    params = run.params
    target = None if epoch is not None else (params.get("train") or {}).get("epsilon")
    n_classes = ((run.meta.get("inputs") or {}).get("data") or {}).get("n_classes")
    extra: dict[str, Any] = {}
    if run.stage == "select":
        extra = {k: run.metrics.get(k) for k in SELECT_KEYS if k in run.metrics}
        extra.setdefault("strategy", (params.get("select") or {}).get("strategy"))
        extra["parent"] = ((run.meta.get("inputs") or {}).get("parent") or {}).get("spec")
    return _base_fields(
        run=str(run.dir),
        meta_sha256=run.meta_sha256,
        stage=run.stage,
        epoch=epoch,
        m=m,
        top=run.metrics,
        target_eps=target,
        n_classes=n_classes,
        cfg=cfg,
        source="run",
        extra=extra,
    )


def orphan_fields(a: AttackResult, cfg: CalibrateConfig) -> dict[str, Any]:
    """A row's fields from an attack's ``target_*`` metrics when its run is not to be found."""
    t = dict(a.result.target)
    if a.target_epoch is not None:  # target_* accuracies describe the final weights
        t.pop("test_accuracy", None)
        t.pop("train_accuracy", None)
    return _base_fields(
        run=a.target_dir,
        meta_sha256=a.target_meta_sha256,
        stage="train",
        epoch=a.target_epoch,
        m=t,
        top=t,
        target_eps=None,
        n_classes=None,
        cfg=cfg,
        source=f"target_* of {a.dir} (run not found)",
        extra={},
    )


def attack_fields(a: AttackResult, cfg: CalibrateConfig) -> dict[str, Any]:
    """``<attack>_<score>`` (+ ``_low``/``_high``) and ``<attack>_dir`` for one attack."""
    out: dict[str, Any] = {f"{a.name}_dir": str(a.dir)}
    for s in SCORES[a.kind]:
        for name in s.reads:
            a.verified(name)
        v, lo, hi = s.of(a.result, a.dir, cfg.confidence)
        out[f"{a.name}_{s.key}"] = v
        out[f"{a.name}_{s.key}_low"] = lo
        out[f"{a.name}_{s.key}_high"] = hi
    return out


def _created(a: Artifact) -> str:
    return str(a.meta.get("created", ""))


def build_rows(col: Collection, cfg: CalibrateConfig) -> list[Row]:
    """One row per run (final weights) plus one per attacked checkpoint, attacks attached."""
    by_hash = {r.meta_sha256: r for r in col.runs}
    by_path = {os.path.realpath(r.dir): r for r in col.runs}
    rows: dict[tuple[str, int | None], Row] = {}
    for r in col.runs:
        rows[(r.meta_sha256, None)] = Row(run_fields(r, None, cfg))
    outside: dict[str, Artifact] = {}
    for a in sorted(col.attacks, key=_created):
        run = by_hash.get(a.target_meta_sha256 or "")
        if run is None and os.path.realpath(a.target_dir) in by_path:
            col.warnings.append(
                f"{a.dir} attacked {a.target_dir} before it was re-written "
                f"(meta.json hash differs); skipped — re-run `privtool attack "
                f"--attack {a.name} --target {a.target_dir} --out {a.dir}`"
            )
            continue
        if run is None:
            run = outside.get(a.target_meta_sha256 or "")
        if run is None:
            p = Path(a.target_dir)
            if (p / META).is_file() and a.target_meta_sha256 == file_hash(p / META):
                loaded = load_artifact(p)
                if loaded is not None:
                    run = outside[loaded.meta_sha256] = loaded
                    col.warnings.append(
                        f"{a.dir}: its run {p} lies outside {col.root}; read from there"
                    )
        if run is not None:
            key = (run.meta_sha256, a.target_epoch)
            if key not in rows:
                rows[key] = Row(run_fields(run, a.target_epoch, cfg))
        else:
            key = (f"orphan:{a.target_meta_sha256}:{a.target_dir}", a.target_epoch)
            if key not in rows:
                col.warnings.append(
                    f"{a.dir}: run {a.target_dir} not found (by meta hash or "
                    f"path); its row uses the attack's target_* fields"
                )
                rows[key] = Row(orphan_fields(a, cfg))
        row = rows[key]
        if a.name in row.attacks:
            col.warnings.append(
                f"{row.attacks[a.name].dir} and {a.dir} both attack "
                f"{row['target']} with {a.name}; using the newer, {a.dir}"
            )
        row.attacks[a.name] = a
    col.runs.extend(outside.values())  # provenance of runs read from outside the root
    _attach_audits(rows, col)
    out = list(rows.values())
    for row in out:
        for name in attack_order(row.attacks.values(), cfg):
            row.fields.update(attack_fields(row.attacks[name], cfg))
    return sorted(out, key=lambda r: row_order(r, cfg))


def _attach_audits(rows: dict[tuple[str, int | None], Row], col: Collection) -> None:
    """``audit_*`` fields of the row each canary audit names (by its run's meta.json hash, then
    its path); the newest audit of a row wins."""
    by_path = {(os.path.realpath(r["run"]), r["checkpoint"]): r for r in rows.values()}
    for a in sorted(col.audits, key=_created):
        row = rows.get((a.target_meta_sha256 or "", a.target_epoch))
        if row is None:
            row = by_path.get((os.path.realpath(a.target_dir), a.target_epoch))
            if row is None or row["run_meta_sha256"] != a.target_meta_sha256:
                col.warnings.append(
                    f"{a.dir}: audited run {a.target_dir} not found or re-written "
                    f"since (meta.json hash differs); skipped"
                )
                continue
        m = a.metrics
        row.fields.update({f"audit_{k}": m.get(k) for k in AUDIT_KEYS})
        row.fields["audit_dir"] = str(a.dir)
        row.fields["audit_sandwich"] = sandwich_text(
            m.get("epsilon_lb"), m.get("epsilon_accounted")
        )


AUDIT_KEYS = (
    "epsilon_lb",
    "epsilon_accounted",
    "confidence",
    "delta",
    "canary",
    "canaries",
    "runs",
    "epsilon_lb_clopper_pearson",
    "epsilon_lb_gdp",
)
SANDWICH = "audited ε (lower) ≤ accounted ε (upper)"


def sandwich_text(lower: Any, upper: Any) -> str:
    """ "0.84 ≤ 8" — or, where the audit contradicts the accountant, "0.84 > 0.5 (VIOLATED)"."""
    if lower is None:
        return "—"
    up = "∞" if upper is None else fmt(upper)
    if upper is not None and lower > upper:
        return f"{fmt(lower)} > {up} (VIOLATED)"
    return f"{fmt(lower)} ≤ {up}"


def sandwich_table(rows: Sequence[Row]) -> Table:
    """The ε sandwich of every audited row: Gaussian and VMF (and the rest) side by side."""
    cols = [
        "target",
        "series",
        "ε nominal",
        "canary",
        "M",
        "runs",
        "confidence",
        "δ",
        "audited ε (lower)",
        "accounted ε (upper)",
        SANDWICH,
    ]
    body = [
        [
            r["target"],
            r["series"],
            r["epsilon_nominal"],
            r["audit_canary"],
            r["audit_canaries"],
            r["audit_runs"],
            r["audit_confidence"],
            r["audit_delta"],
            r["audit_epsilon_lb"],
            r["audit_epsilon_accounted"],
            r["audit_sandwich"],
        ]
        for r in rows
        if r["audit_dir"]
    ]
    return Table(
        "sandwich",
        "ε sandwich: canary audits against the accountant",
        cols,
        body,
        note="Audited ε: the one-run lower bound (Steinke, Nasr & Jagielski 2023) at "
        "the stated confidence and the run's δ, from M canaries each in with "
        "probability ½ in a re-training of the run's recipe (privtool audit). "
        "Accounted ε: the audit run's own accountant at the same δ. A lower bound "
        "above the upper one would mean an accounting (or implementation) bug.",
    )


def attack_order(attacks: Iterable[AttackResult], cfg: CalibrateConfig) -> list[str]:
    """Attack names by kind, the headline attack of each kind first."""
    kinds = {a.name: a.kind for a in attacks}
    return sorted(
        kinds, key=lambda n: (KIND_ORDER.index(kinds[n]), cfg.headline.get(kinds[n]) != n, n)
    )


def _series_order(series: str | None, cfg: CalibrateConfig) -> tuple[Any, ...]:
    return (series != "none", series != cfg.baseline, str(series))


def _eps_order(v: Any) -> float:
    return math.inf if not isinstance(v, (int, float)) else float(v)


def row_order(r: Row, cfg: CalibrateConfig) -> tuple[Any, ...]:
    return (
        str(r["dataset"]),
        str(r["model"]),
        _series_order(r["series"], cfg),
        _eps_order(r["epsilon_nominal"]),
        r["checkpoint"] or 10**9,
        r["run"],
    )


def all_attacks(rows: Sequence[Row], cfg: CalibrateConfig) -> list[tuple[str, str]]:
    """(attack name, kind) of every attack on any row, in column order."""
    found: dict[str, AttackResult] = {}
    for r in rows:
        found.update(r.attacks)
    return [(n, found[n].kind) for n in attack_order(found.values(), cfg)]


# ---------------------------------------------------------------------------------- views


def _short(h: Any) -> str:
    return str(h)[:12] if h else "—"


def runs_table(rows: Sequence[Row], cfg: CalibrateConfig) -> Table:
    attacks = all_attacks(rows, cfg)
    top10 = any(r["test_top10_accuracy"] is not None for r in rows)
    cols = ["target", "series", "model", "dataset", "ε nominal", "test acc"]
    cols += ["top-10 acc"] if top10 else []
    cols += ["train gap (not private)"]
    keys: list[tuple[str, Score]] = []
    for name, kind in attacks:
        for s in SCORES[kind]:
            keys.append((name, s))
            cols.append(f"{name} {s.label}")
    audited = any(r["audit_dir"] for r in rows)
    cols += [SANDWICH] if audited else []
    cols.append("meta sha256")
    body = []
    for r in rows:
        cells = [
            r["target"],
            r["series"],
            r["model"],
            r["dataset"],
            r["epsilon_nominal"],
            r["test_accuracy"],
        ]
        cells += [r["test_top10_accuracy"]] if top10 else []
        cells.append(r["train_gap"])
        cells += [r[f"{n}_{s.key}"] for n, s in keys]
        cells += [r["audit_sandwich"] or "—"] if audited else []
        cells.append(_short(r["run_meta_sha256"]))
        body.append(cells)
    return Table(
        "runs",
        "Runs and attacks (one row per attacked model)",
        cols,
        body,
        note="Scores: membership AUC / TPR at 0.1 % FPR / empirical ε lower bound "
        "(higher = more leakage); reconstruction SSIM mean (higher = more) and "
        "MSE median (lower = more); inversion MIA distance (lower = more). "
        "`calibration.csv` / `.json` add each score's interval and attack dir. "
        "Train gap is a diagnostic computed on the private training data "
        "without noise: not covered by ε, not private.",
    )


def epsilon_table(rows: Sequence[Row]) -> Table:
    keys = sorted(
        {
            k
            for r in rows
            for k in r.fields
            if k.startswith("epsilon")
            and k not in ("epsilon_nominal", "epsilon_nominal_source")
            and not k.startswith("epsilon_lower_bound")
            and not any(k.startswith(f"{a}_") for a in r.attacks)
        }
    )
    cols = ["target", "series", "ε nominal", "nominal from", *keys, "delta", "noise"]
    body = [
        [
            r["target"],
            r["series"],
            r["epsilon_nominal"],
            r["epsilon_nominal_source"],
            *[r[k] for k in keys],
            r["delta"],
            r["noise"],
        ]
        for r in rows
    ]
    return Table(
        "epsilon",
        "Every ε field of each run, named by its kind",
        cols,
        body,
        note="ε fields are not comparable across mechanisms: Gaussian `epsilon` is "
        "(ε, δ)-DP of the whole run; VMF `epsilon_v_nominal` is paper 1's "
        "per-update ε_V and `epsilon` its composed whole-run ε-DP; class/subclass "
        "ε is per unit (`epsilon_record` per record). ε holds only with secret "
        "noise: a `reproducible` run's noise follows from its recorded seed.",
    )


def _mean(vals: list[float]) -> float | None:
    vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _pivot(
    rows: Sequence[Row],
    value: Any,
    cfg: CalibrateConfig,
) -> tuple[list[tuple[Any, ...]], list[str], dict[tuple[Any, ...], dict[str, Any]]]:
    """(model, series, ε) × dataset -> mean of ``value(row)`` (several seeds average)."""
    cells: dict[tuple[Any, ...], dict[str, list[float]]] = {}
    datasets: list[str] = []
    for r in rows:
        if not r.final:
            continue
        v = value(r)
        if v is None:
            continue
        k = (r["model"], r["series"], r["epsilon_nominal"])
        cells.setdefault(k, {}).setdefault(r["dataset"], []).append(v)
        if r["dataset"] not in datasets:
            datasets.append(r["dataset"])
    order = sorted(cells, key=lambda k: (str(k[0]), _series_order(k[1], cfg), _eps_order(k[2])))
    return order, sorted(datasets), {k: {d: _mean(v) for d, v in cells[k].items()} for k in order}


def _pct(v: Any) -> float | None:
    return None if v is None else round(100 * v, 1)


def _round(v: Any, digits: int = 3) -> float | None:
    """``v`` to ``digits`` significant digits (paper-style cells without losing small MSEs)."""
    if v is None or not math.isfinite(v) or v == 0:
        return v
    return round(v, digits - 1 - int(math.floor(math.log10(abs(v))))) + 0.0


def headline_attack(rows: Sequence[Row], kind: str, cfg: CalibrateConfig) -> tuple[str | None, str]:
    """The attack of ``kind`` the views use, and a note when the configured one is absent."""
    names = [n for n, k in all_attacks(rows, cfg) if k == kind]
    want = cfg.headline.get(kind)
    if want in names:
        return want, ""
    if names:
        return names[0], f" (attack `{want}` not found; showing `{names[0]}`)"
    return None, f" (no {kind} attack results)"


def table4_accuracy(rows: Sequence[Row], cfg: CalibrateConfig) -> Table:
    order, datasets, cells = _pivot(rows, lambda r: r["test_accuracy"], cfg)
    _, _, top = _pivot(rows, lambda r: r["test_top10_accuracy"], cfg)
    cols = ["model", "mechanism", "ε nominal", *[f"{d} acc %" for d in datasets]]
    has_top = any(top.get(k) for k in order)
    if has_top:
        cols += [f"{d} top-10 %" for d in datasets]
    body = []
    for k in order:
        row = [*k, *[_pct(cells[k].get(d)) for d in datasets]]
        if has_top:
            row += [_pct((top.get(k) or {}).get(d)) for d in datasets]
        body.append(row)
    return Table(
        "table4_accuracy",
        "Paper 1 Table 4 view: test accuracy (%)",
        cols,
        body,
        note="Final weights of each run; runs sharing model, mechanism and nominal ε "
        "(seeds) are averaged. Paper 1 quotes top-10 accuracy where classes > 10.",
    )


def table5_membership(rows: Sequence[Row], cfg: CalibrateConfig) -> Table:
    name, note = headline_attack(rows, "membership", cfg)
    order, datasets, cells = _pivot(rows, lambda r: r[f"{name}_auc"], cfg) if name else ([], [], {})
    cols = ["model", "mechanism", "ε nominal", *[f"{d} AUC %" for d in datasets]]
    body = [[*k, *[_pct(cells[k].get(d)) for d in datasets]] for k in order]
    return Table(
        "table5_membership",
        f"Paper 1 Table 5 view: MIA-R attack AUC (%){note}",
        cols,
        body,
        note=f"Attack `{name}`; 50 % is chance." if name else "",
    )


def table6_reconstruction(rows: Sequence[Row], cfg: CalibrateConfig) -> Table:
    name, note = headline_attack(rows, "reconstruction", cfg)
    if not name:
        return Table(
            "table6_reconstruction",
            f"Paper 1 Table 6 view: IGA SSIM / MSE{note}",
            ["model", "mechanism", "ε nominal"],
            [],
        )
    order, datasets, ssim = _pivot(rows, lambda r: r[f"{name}_ssim"], cfg)
    _, _, mse = _pivot(rows, lambda r: r[f"{name}_mse"], cfg)
    cols = [
        "model",
        "mechanism",
        "ε nominal",
        *[f"SSIM {d}" for d in datasets],
        *[f"MSE {d}" for d in datasets],
    ]
    body = [
        [
            *k,
            *[_round(ssim[k].get(d)) for d in datasets],
            *[_round(mse[k].get(d)) for d in datasets],
        ]
        for k in order
    ]
    return Table(
        "table6_reconstruction",
        f"Paper 1 Table 6 view: IGA SSIM (mean) and MSE (median){note}",
        cols,
        body,
        note=f"Attack `{name}`.",
    )


def table7_delta(rows: Sequence[Row], cfg: CalibrateConfig) -> Table:
    """Δ = other − baseline at equal nominal ε: ΔMIA-R in AUC points (negative: the other
    mechanism leaks less), ΔIGA in median MSE (positive: it leaks less). Paper 1's Table 7
    caption says "Gaussian minus VMF", but its numbers are VMF − Gaussian (e.g. LeNet
    F-MNIST ε = 50: MIA-R 49.8 − 50.4 = −0.6, IGA MSE 1.66 − 1.17 = 0.49) and so is its
    reading of the signs; we follow the numbers."""
    mia, note_m = headline_attack(rows, "membership", cfg)
    iga, note_i = headline_attack(rows, "reconstruction", cfg)
    finals = [
        r
        for r in rows
        if r.final and r["stage"] == "train" and isinstance(r["epsilon_nominal"], (int, float))
    ]
    base = [r for r in finals if r["series"] == cfg.baseline]
    datasets = sorted({r["dataset"] for r in finals})
    groups: dict[tuple[Any, ...], dict[str, dict[str, list[float]]]] = {}
    for b in base:
        for o in finals:
            if o["series"] == cfg.baseline or (o["dataset"], o["model"]) != (
                b["dataset"],
                b["model"],
            ):
                continue
            if not math.isclose(
                b["epsilon_nominal"], o["epsilon_nominal"], rel_tol=cfg.epsilon_rtol
            ):
                continue
            k = (b["model"], f"{o['series']} − {cfg.baseline}", b["epsilon_nominal"])
            for what, attack, key, scale in (("mia", mia, "auc", 100.0), ("iga", iga, "mse", 1.0)):
                if attack and b[f"{attack}_{key}"] is not None and o[f"{attack}_{key}"] is not None:
                    g = groups.setdefault(k, {"mia": {}, "iga": {}})
                    g[what].setdefault(b["dataset"], []).append(
                        scale * (o[f"{attack}_{key}"] - b[f"{attack}_{key}"])
                    )
    cols = [
        "model",
        "mechanism − baseline",
        "ε nominal",
        *[f"ΔMIA-R {d}" for d in datasets],
        *[f"ΔIGA {d}" for d in datasets],
    ]
    order = sorted(groups, key=lambda k: (str(k[0]), k[1], k[2]))
    body = [
        [
            *k,
            *[_round(_mean(groups[k]["mia"].get(d, []))) for d in datasets],
            *[_round(_mean(groups[k]["iga"].get(d, []))) for d in datasets],
        ]
        for k in order
    ]
    note = (
        f"ΔMIA-R: `{mia or '—'}` AUC (percentage points) of the mechanism minus "
        f"{cfg.baseline}'s — negative: the mechanism leaks less; ΔIGA: `{iga or '—'}` median "
        f"MSE of the mechanism minus {cfg.baseline}'s — positive: it leaks less. As paper 1 "
        f"Table 7's numbers "
        f"(its caption says the reverse difference; its values and their reading are "
        f"mechanism − Gaussian). Pairs: equal nominal ε (relative tolerance "
        f"{cfg.epsilon_rtol}).{note_m}{note_i}"
    )
    if not body:
        note += (
            f" No attacked {cfg.baseline} run shares a nominal ε with another mechanism "
            f"here; the full profile (params-full.yaml) has ε = 1 and 50 for both Gaussian "
            f"and VMF."
        )
    return Table(
        "table7_delta",
        f"Paper 1 Table 7 view: Δ empirical privacy, mechanism − {cfg.baseline} at equal nominal ε",
        cols,
        body,
        note=note,
    )


def equivalent_rows(rows: Sequence[Row], cfg: CalibrateConfig) -> list[dict[str, Any]]:
    """For each non-baseline row and attack: the baseline ε with the same attack success."""
    out = []
    for r in rows:
        if r["series"] == cfg.baseline:
            continue
        for name, a in sorted(r.attacks.items()):
            key = cfg.judged_by[a.kind]
            s = score(a.kind, key)
            value, lo, hi = r.score(name, key)
            if value is None:
                continue
            base = [
                b
                for b in rows
                if b["series"] == cfg.baseline
                and b["dataset"] == r["dataset"]
                and b["model"] == r["model"]
                and b[f"{name}_{key}"] is not None
            ]
            eq = equivalent_epsilon(
                [b["epsilon_nominal"] for b in base],
                [b[f"{name}_{key}"] for b in base],
                value,
                interval=(lo, hi),
                leak=s.leak,
            )
            rec = {
                "target": r["target"],
                "run_meta_sha256": r["run_meta_sha256"],
                "series": r["series"],
                "dataset": r["dataset"],
                "model": r["model"],
                "epsilon_nominal": r["epsilon_nominal"],
                "attack": name,
                "score": key,
                "value": value,
                "value_low": lo,
                "value_high": hi,
                "baseline": cfg.baseline,
                "baseline_runs": len(base),
            }
            if eq is None:
                rec.update(
                    {
                        "equivalent_epsilon": None,
                        "relation": None,
                        "equivalent_low": None,
                        "equivalent_high": None,
                        "text": f"fewer than two {cfg.baseline} ε values attacked with "
                        f"{name} on {r['dataset']}/{r['model']}",
                    }
                )
            else:
                eps_txt = fmt(r["epsilon_nominal"]) if r["epsilon_nominal"] is not None else "∞"
                rec.update(
                    {
                        "equivalent_epsilon": eq.epsilon,
                        "relation": eq.relation,
                        "equivalent_low": eq.low,
                        "equivalent_high": eq.high,
                        "interval_text": eq.text(),
                        "text": f"{r['series']} at ε = {eps_txt} protects like "
                        f"{cfg.baseline} at ε {eq.text()} against {name} "
                        f"({s.label} {value:.3g})",
                    }
                )
            out.append(rec)
    return out


def equivalent_table(recs: Sequence[dict[str, Any]], cfg: CalibrateConfig) -> Table:
    cols = [
        "target",
        "series",
        "ε nominal",
        "attack",
        "score",
        "value",
        "interval",
        f"≈ {cfg.baseline} ε [range]",
        f"{cfg.baseline} runs",
    ]
    body = [
        [
            r["target"],
            r["series"],
            r["epsilon_nominal"],
            r["attack"],
            r["score"],
            r["value"],
            _interval_text(r["value_low"], r["value_high"]),
            r.get("interval_text") or r["text"],
            r["baseline_runs"],
        ]
        for r in recs
    ]
    return Table(
        "equivalent",
        f"Equivalent {cfg.baseline} ε per attack",
        cols,
        body,
        note=f"The {cfg.baseline} ε whose attack score matches the run's, from the "
        f"{cfg.baseline} runs of the same dataset and model made monotone "
        f"(isotonic regression) and interpolated in log ε; the range is the ε "
        f"whose {cfg.baseline} score lies in the run's {cfg.confidence:.0%} score "
        f"interval. ≤ / ≥: beyond the {cfg.baseline} ε values tried.",
    )


def _interval_text(lo: Any, hi: Any) -> str:
    if lo is None and hi is None:
        return "—"
    return f"[{fmt(lo)}, {'∞' if hi is None else fmt(hi)}]"


def accuracy_matched_rows(rows: Sequence[Row], cfg: CalibrateConfig) -> list[dict[str, Any]]:
    """Pairs of runs (same dataset and model, different mechanisms) whose test accuracies
    differ by at most ``accuracy_tolerance``, compared attack by attack (paper 3 Figs 6–8)."""
    out = []
    ok = [r for r in rows if r["test_accuracy"] is not None and r.attacks]
    for i, first in enumerate(ok):
        for second in ok[i + 1 :]:
            if first["series"] == second["series"] or (
                (first["dataset"], first["model"]) != (second["dataset"], second["model"])
            ):
                continue
            if (
                abs(first["test_accuracy"] - second["test_accuracy"])
                > cfg.accuracy_tolerance + 1e-12
            ):
                continue
            a, b = sorted((first, second), key=lambda r: _series_order(r["series"], cfg))
            for name in sorted(set(a.attacks) & set(b.attacks)):
                kind = a.attacks[name].kind
                key = cfg.judged_by[kind]
                s = score(kind, key)
                va, la, ha = a.score(name, key)
                vb, lb, hb = b.score(name, key)
                if va is None or vb is None:
                    continue
                out.append(
                    {
                        "dataset": a["dataset"],
                        "model": a["model"],
                        "attack": name,
                        "score": key,
                        "a": a["target"],
                        "a_series": a["series"],
                        "a_epsilon_nominal": a["epsilon_nominal"],
                        "a_test_accuracy": a["test_accuracy"],
                        "a_value": va,
                        "b": b["target"],
                        "b_series": b["series"],
                        "b_epsilon_nominal": b["epsilon_nominal"],
                        "b_test_accuracy": b["test_accuracy"],
                        "b_value": vb,
                        "more_robust": _verdict(
                            a["series"], b["series"], s.leak, (va, la, ha), (vb, lb, hb)
                        ),
                    }
                )
    return out


def _verdict(
    name_a: str, name_b: str, leak: int, a: tuple[Any, Any, Any], b: tuple[Any, Any, Any]
) -> str:
    """Which side the attack learned less from; "within noise" where the intervals overlap."""
    (va, la, ha), (vb, lb, hb) = a, b
    if va == vb:
        return "tie"
    better = name_a if leak * va < leak * vb else name_b
    if all(x is None for x in (la, ha, lb, hb)):
        return f"{better} (no interval)"
    apart = (ha is not None and lb is not None and ha < lb) or (
        hb is not None and la is not None and hb < la
    )
    return better if apart else "within noise"


def accuracy_matched_table(recs: Sequence[dict[str, Any]], cfg: CalibrateConfig) -> Table:
    cols = [
        "dataset",
        "model",
        "attack",
        "score",
        "A",
        "A series",
        "A ε",
        "A acc",
        "A score",
        "B",
        "B series",
        "B ε",
        "B acc",
        "B score",
        "more robust",
    ]
    body = [
        [
            r["dataset"],
            r["model"],
            r["attack"],
            r["score"],
            r["a"],
            r["a_series"],
            r["a_epsilon_nominal"],
            r["a_test_accuracy"],
            r["a_value"],
            r["b"],
            r["b_series"],
            r["b_epsilon_nominal"],
            r["b_test_accuracy"],
            r["b_value"],
            r["more_robust"],
        ]
        for r in recs
    ]
    return Table(
        "accuracy_matched",
        f"Accuracy-matched comparison (paper 3 Figs 6–8): test "
        f"accuracy within ±{cfg.accuracy_tolerance:g}",
        cols,
        body,
        note="Runs of the same dataset and model, different mechanisms, similar "
        'accuracy; "more robust" is the one the attack learned less from, '
        f'"within noise" where the {cfg.confidence:.0%} score intervals overlap.',
    )


# ---------------------------------------------------------------------------- the result


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
    if a.stage == "audit" and isinstance(a, AttackResult):
        target = a.target_dir if a.target_epoch is None else f"{a.target_dir}@{a.target_epoch}"
        rec.update(
            {
                "kind": "audit",
                "target": target,
                "target_meta_sha256": a.target_meta_sha256,
                "command": reproduce("audit", a.params, str(a.dir), target=target),
            }
        )
    elif isinstance(a, AttackResult):
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
    rows = build_rows(col, cfg)
    for r in rows:
        eps = r["epsilon_nominal"]
        if r["mechanism"] != "none" and not (
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
