"""Comparisons across mechanisms: the baseline ε with the same attack success (equivalent ε)
and runs of similar accuracy compared attack by attack (paper 3 Figs 6–8)."""

from __future__ import annotations

from typing import Any, Sequence

from privtool.calibrate.equivalent import equivalent_epsilon
from privtool.calibrate.rows import Row, series_order
from privtool.calibrate.scores import score
from privtool.calibrate.settings import CalibrateConfig
from privtool.calibrate.table import Table, fmt, interval_text


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
            interval_text(r["value_low"], r["value_high"]),
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
            a, b = sorted((first, second), key=lambda r: series_order(r["series"], cfg))
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
