"""Join runs and attack results into one row per attacked model.

A row is a run (``train`` or ``select``) at its final weights, or at a checkpoint an attack
targeted (``RUN_DIR@EPOCH``). It carries the run directory and its meta.json hash, the
mechanism and every ε field, utility, and for each attack on it that attack's scores with
their intervals and directory (read off its result object, :mod:`privtool.results`) — so every
number traces back to the artifact it came from. The tables are views of these rows
(:mod:`privtool.calibrate.paper`, :mod:`privtool.calibrate.comparisons`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from privtool.artifacts import META, file_hash
from privtool.calibrate.collect import Artifact, AttackDir, Collection, load_artifact
from privtool.calibrate.scores import SCORES
from privtool.calibrate.settings import CalibrateConfig
from privtool.calibrate.table import fmt

KIND_ORDER = tuple(SCORES)
#: metrics of a select run worth a column (generic: whatever of these the stage wrote)
SELECT_KEYS = ("strategy", "n_labeled", "parent_test_accuracy", "accuracy_gain", "labels_revealed")


@dataclass
class Row:
    """One attacked model: the row's fields and the attack results behind its columns."""

    fields: dict[str, Any]
    attacks: dict[str, AttackDir] = field(default_factory=dict)

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


def orphan_fields(a: AttackDir, cfg: CalibrateConfig) -> dict[str, Any]:
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


def attack_fields(a: AttackDir, cfg: CalibrateConfig) -> dict[str, Any]:
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


def attack_order(attacks: Iterable[AttackDir], cfg: CalibrateConfig) -> list[str]:
    """Attack names by kind, the headline attack of each kind first."""
    kinds = {a.name: a.kind for a in attacks}
    return sorted(
        kinds, key=lambda n: (KIND_ORDER.index(kinds[n]), cfg.headline.get(kinds[n]) != n, n)
    )


def series_order(series: str | None, cfg: CalibrateConfig) -> tuple[Any, ...]:
    return (series != "none", series != cfg.baseline, str(series))


def epsilon_order(v: Any) -> float:
    return math.inf if not isinstance(v, (int, float)) else float(v)


def row_order(r: Row, cfg: CalibrateConfig) -> tuple[Any, ...]:
    return (
        str(r["dataset"]),
        str(r["model"]),
        series_order(r["series"], cfg),
        epsilon_order(r["epsilon_nominal"]),
        r["checkpoint"] or 10**9,
        r["run"],
    )


def all_attacks(rows: Sequence[Row], cfg: CalibrateConfig) -> list[tuple[str, str]]:
    """(attack name, kind) of every attack on any row, in column order."""
    found: dict[str, AttackDir] = {}
    for r in rows:
        found.update(r.attacks)
    return [(n, found[n].kind) for n in attack_order(found.values(), cfg)]


def headline_attack(rows: Sequence[Row], kind: str, cfg: CalibrateConfig) -> tuple[str | None, str]:
    """The attack of ``kind`` the views use, and a note when the configured one is absent."""
    names = [n for n, k in all_attacks(rows, cfg) if k == kind]
    want = cfg.headline.get(kind)
    if want in names:
        return want, ""
    if names:
        return names[0], f" (attack `{want}` not found; showing `{names[0]}`)"
    return None, f" (no {kind} attack results)"
