"""privtool calibrate: equivalent-ε maths, the table builder on fixture runs, the command."""

import csv
import itertools
import json
import math
import shlex

import numpy as np
import pytest
from calibrate_fixtures import (
    auc_signal,
    make_attack,
    make_train,
    standard_runs,
    template,
    write_stage,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from privtool.artifacts import file_hash
from privtool.calibrate import build, calibrate_settings, collect
from privtool.calibrate.equivalent import equivalent_epsilon, isotonic
from privtool.calibrate.scores import median_interval
from privtool.cli import app
from privtool.config import load_params
from privtool.errors import PrivtoolError

runner = CliRunner()


# ------------------------------------------------------------------------- equivalent ε


def test_equivalent_epsilon_inverts_a_known_curve():
    eps = [1, 2, 4, 8]
    curve = [0.5 + 0.05 * math.log(e) for e in eps]  # linear in log ε
    value = 0.5 + 0.05 * math.log(3)
    lo, hi = 0.5 + 0.05 * math.log(1.5), 0.5 + 0.05 * math.log(6)
    eq = equivalent_epsilon(eps, curve, value, interval=(lo, hi))
    assert eq.relation == "≈"
    assert eq.epsilon == pytest.approx(3)
    assert (eq.low, eq.high) == (pytest.approx(1.5), pytest.approx(6))
    assert eq.text() == "≈ 3 [1.5, 6]"


def test_equivalent_epsilon_for_a_score_that_falls_with_leakage():
    eps = [1, 10, 100]
    mse = [0.3, 0.2, 0.1]  # MSE drops as ε grows: leak = -1
    eq = equivalent_epsilon(eps, mse, 0.15, leak=-1)
    assert eq.relation == "≈" and eq.epsilon == pytest.approx(math.sqrt(10 * 100))


def test_equivalent_epsilon_out_of_range_is_one_sided_not_extrapolated():
    eps, auc = [1, 8], [0.50, 0.56]
    low = equivalent_epsilon(eps, auc, 0.45, interval=(0.44, 0.46))
    assert (low.relation, low.epsilon, low.low, low.high) == ("≤", 1, None, 1)
    high = equivalent_epsilon(eps, auc, 0.70, interval=(0.52, 0.80))
    assert high.relation == "≥" and high.epsilon == 8 and high.high is None
    assert high.low == pytest.approx(math.exp(math.log(8) / 3))  # 0.52 is 1/3 up the curve
    assert high.text().endswith("> 8]")


def test_equivalent_epsilon_on_a_flat_curve_is_the_whole_range():
    eq = equivalent_epsilon([1, 4, 16], [0.5, 0.5, 0.5], 0.5, interval=(0.49, 0.51))
    assert eq.epsilon == pytest.approx(4)  # geometric middle of [1, 16]
    assert eq.low is None and eq.high is None


def test_equivalent_epsilon_needs_two_baseline_epsilons():
    assert equivalent_epsilon([1, 1, None], [0.5, 0.52, 0.6], 0.5) is None


def test_isotonic_pools_violators():
    xs, ys = isotonic([1, 2, 3, 4], [0.5, 0.6, 0.55, 0.7])
    assert list(xs) == [1, 2, 3, 4]
    assert list(ys) == pytest.approx([0.5, 0.575, 0.575, 0.7])
    xs, ys = isotonic([2, 1, 2], [0.6, 0.5, 0.4])  # equal ε pooled first
    assert list(xs) == [1, 2] and list(ys) == pytest.approx([0.5, 0.5])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8), st.floats(0.0, 1.0))
def test_equivalent_epsilon_lands_on_the_monotone_curve(steps, where):
    eps = [2.0**i for i in range(len(steps))]
    scores = list(itertools.accumulate(steps))
    xs, ys = isotonic([math.log(e) for e in eps], scores)
    value = min(max(ys[0] + where * (ys[-1] - ys[0]), ys[0]), ys[-1])
    eq = equivalent_epsilon(eps, scores, value)
    assert eq.relation == "≈" and 1 - 1e-9 <= eq.epsilon <= eps[-1] * (1 + 1e-9)
    # the curve at the equivalent ε gives the value back
    assert float(np.interp(math.log(eq.epsilon), xs, ys)) == pytest.approx(value, abs=1e-9)


def test_median_interval_covers_the_median():
    lo, hi = median_interval(np.arange(1.0, 101.0), 0.95)
    assert lo < 50.5 < hi and (lo, hi) == (40.0, 61.0)  # the textbook order statistics


# ---------------------------------------------------------------------------- the tables


@pytest.fixture(scope="module")
def fixture_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, standard_runs(root)


def _build(root, **settings_):
    return build(collect(root), calibrate_settings(settings_))


def test_rows_trace_back_to_run_and_attack_artifacts(fixture_runs):
    root, runs = fixture_runs
    cal = _build(root)
    rows = {r["target"]: r for r in cal.rows}
    # one row per run + one for the attacked checkpoint
    assert set(rows) == {*(str(p) for p in runs.values()), f"{runs['g8']}@2"}
    for target, r in rows.items():
        run_dir = target.split("@")[0]
        assert r["run_meta_sha256"] == file_hash(f"{run_dir}/meta.json")
        for name, a in r.attacks.items():
            m = json.loads((a.dir / "metrics.json").read_text())
            assert r.fields[f"{name}_dir"] == str(a.dir)
            for key in (
                "auc",
                "tpr_at_0.1pct_fpr",
                "epsilon_lower_bound",
                "ssim",
                "mse",
                "mia_distance",
            ):
                if key in m and f"{name}_{key}" in r.fields:
                    assert r.fields[f"{name}_{key}"] == m[key]
    g1 = rows[str(runs["g1"])]
    assert g1["loss_auc"] is not None and g1["stage"] == "train"
    assert g1["iga_mse"] == pytest.approx(0.30) and g1["inversion_mia_distance"] == 6.5
    lo, hi = g1["loss_auc_low"], g1["loss_auc_high"]
    assert lo < g1["loss_auc"] < hi
    assert g1["iga_mse_low"] <= 0.30 <= g1["iga_mse_high"]


def test_nominal_epsilon_and_every_epsilon_field(fixture_runs):
    root, runs = fixture_runs
    rows = {r["target"]: r for r in _build(root).rows}
    g8 = rows[str(runs["g8"])]
    assert g8["epsilon_nominal"] == 8 and g8["epsilon_nominal_source"] == "train.epsilon (target)"
    assert g8["epsilon"] == pytest.approx(8 * 0.9997)
    v50 = rows[str(runs["v50"])]
    assert v50["epsilon_nominal"] == 50 and v50["epsilon_nominal_source"] == "epsilon_v_nominal"
    assert v50["epsilon"] == 96 * 50 and v50["epsilon_step"] == 50
    ckpt = rows[f"{runs['g8']}@2"]  # a checkpoint: its own ε and accuracy, not the target's
    entry = next(
        c
        for c in json.loads((runs["g8"] / "metrics.json").read_text())["checkpoints"]
        if c["epoch"] == 2
    )
    assert ckpt["checkpoint"] == 2 and ckpt["test_accuracy"] == entry["test_accuracy"]
    assert ckpt["epsilon_nominal"] == entry["epsilon"]
    assert rows[str(runs["none"])]["epsilon_nominal"] is None


def test_select_runs_are_rows_with_their_composed_epsilon(fixture_runs):
    root, runs = fixture_runs
    rows = {r["target"]: r for r in _build(root).rows}
    sel = rows[str(runs["sel"])]
    m = json.loads((runs["sel"] / "metrics.json").read_text())
    assert sel["stage"] == "select" and sel["series"] == "gaussian+random"
    assert sel["epsilon_nominal"] == m["epsilon"] and sel["test_accuracy"] == m["test_accuracy"]
    assert sel["parent"] == str(runs["g1"])


def test_paper1_views_and_delta_table(fixture_runs):
    root, runs = fixture_runs
    cal = _build(root, headline={"membership": "loss"})
    tables = {t.name: t for t in cal.tables}
    t4 = {(r[0], r[1], r[2]): r[3] for r in tables["table4_accuracy"].rows}
    assert t4[("lenet", "gaussian", 8)] == 86.0 and t4[("lenet", "vmf", 50)] == 87.0
    assert [r[1] for r in tables["table4_accuracy"].rows][:2] == ["none", "gaussian"]
    rows = {r["target"]: r for r in cal.rows}
    t7 = {(r[1], r[2]): r for r in tables["table7_delta"].rows}
    assert set(t7) == {("vmf − gaussian", 1), ("vmf − gaussian", 50)}
    g, v = rows[str(runs["g50"])], rows[str(runs["v50"])]
    # paper 1 Table 7's sign (its numbers): VMF − Gaussian
    assert t7[("vmf − gaussian", 50)][3] == pytest.approx(
        100 * (v["loss_auc"] - g["loss_auc"]), abs=0.01
    )
    assert t7[("vmf − gaussian", 50)][4] == pytest.approx(0.25 - 0.10)
    t6 = tables["table6_reconstruction"]
    assert t6.columns[-2:] == ["SSIM mnist-5k", "MSE mnist-5k"]


def test_equivalent_rows_use_the_gaussian_runs_of_the_same_model(fixture_runs):
    root, runs = fixture_runs
    cal = _build(root)
    eq = {(e["target"], e["attack"]): e for e in cal.equivalent}
    v50 = eq[(str(runs["v50"]), "loss")]
    assert v50["baseline_runs"] == 5  # 4 final Gaussian LeNets + the attacked checkpoint
    assert v50["relation"] in ("≈", "≤", "≥") and "protects like gaussian" in v50["text"]
    iga = eq[(str(runs["v50"]), "iga")]
    # Gaussian MSE 0.30 at ε 1, 0.10 at ε 50: 0.25 sits a quarter of the way in log ε
    assert iga["equivalent_epsilon"] == pytest.approx(50**0.25, rel=1e-6)
    assert eq[(str(runs["none"]), "iga")]["relation"] == "≥"
    assert not any(e["target"] == str(runs["g1"]) for e in cal.equivalent)


def test_accuracy_matched_pairs(fixture_runs):
    root, runs = fixture_runs
    cal = _build(root, accuracy_tolerance=0.011)
    pairs = {(m["a"], m["b"], m["attack"]) for m in cal.accuracy_matched}
    # g50 (0.88) and v50 (0.87); g2 (0.82) and v1 (0.81); nothing crosses models
    assert (str(runs["g50"]), str(runs["v50"]), "iga") in pairs
    assert (str(runs["g2"]), str(runs["v1"]), "loss") in pairs
    iga = next(m for m in cal.accuracy_matched if m["attack"] == "iga")
    assert iga["more_robust"] in ("vmf", "gaussian", "within noise")
    assert all(m["a_series"] != m["b_series"] for m in cal.accuracy_matched)


def test_attacks_link_by_meta_hash_even_when_the_run_moved(tmp_path):
    run = make_train(tmp_path / "elsewhere", "g1", epsilon=1)
    make_attack(tmp_path / "root" / "attack", "loss", run, signal=0.3)
    (tmp_path / "root" / "train").mkdir()
    run.rename(tmp_path / "root" / "train" / "renamed")
    cal = _build(tmp_path / "root")
    assert [r["run"] for r in cal.rows] == [str(tmp_path / "root" / "train" / "renamed")]
    assert cal.rows[0]["loss_auc"] is not None and not cal.warnings


def test_stale_and_orphan_attacks_are_reported(tmp_path):
    run = make_train(tmp_path / "train", "g1", epsilon=1)
    make_attack(tmp_path / "attack", "loss", run, signal=0.3)
    meta = json.loads((run / "meta.json").read_text())
    meta["created"] = "later"  # re-trained after the attack: the hash no longer matches
    (run / "meta.json").write_text(json.dumps(meta))
    cal = _build(tmp_path)
    assert "loss_auc" not in cal.rows[0].fields
    assert any("re-written" in w for w in cal.warnings)
    # an attack whose run is nowhere: its row comes from the attack's target_* fields
    other = make_train(tmp_path / "gone", "g2", epsilon=2)
    make_attack(tmp_path / "attack2", "loss", other, signal=0.3)
    import shutil

    shutil.rmtree(tmp_path / "gone")
    cal = _build(tmp_path)
    orphan = next(r for r in cal.rows if r["run"] == str(other))
    assert orphan["mechanism"] == "gaussian" and orphan["loss_auc"] is not None
    assert "run not found" in orphan["source"]


def test_a_tampered_score_file_is_a_clear_error(tmp_path):
    run = make_train(tmp_path / "train", "g1", epsilon=1)
    att = make_attack(tmp_path / "attack", "iga", run)
    with open(att / "per_target.csv", "a") as f:
        f.write("99,0,0,0,0,0,0.0,0,0\n")
    with pytest.raises(PrivtoolError, match="does not match the hash"):
        _build(tmp_path)


def test_reproduce_command_round_trips_the_recorded_params(fixture_runs):
    root, runs = fixture_runs
    cal = _build(root)
    src = next(s for s in cal.sources if s["dir"] == str(runs["v50"]))
    words = shlex.split(src["command"].replace("\\\n", " "))
    assert words[:4] == ["privtool", "train", "--out", str(runs["v50"])]
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    got = load_params(None, sets).as_dict()
    meta = json.loads((runs["v50"] / "meta.json").read_text())
    meta["params"]["train"].setdefault("noise_seed", "from-seed")  # recorded before the key
    defaults = load_params(None, []).as_dict()  # keys added after the fixture was recorded
    for section in ("data", "train", "pretrain"):
        for key, value in defaults[section].items():
            meta["params"][section].setdefault(key, value)
    for section in ("data", "train", "pretrain"):
        assert got[section] == meta["params"][section], section
    att = next(s for s in cal.sources if s.get("attack") == "iga")
    assert att["command"].startswith(f"privtool attack --attack iga --target {att['target']} ")
    assert "attack.iga.iterations=" in att["command"] and "attack.name" not in att["command"]


# ----------------------------------------------------------------------------- the command


def test_calibrate_command_writes_tables_plots_and_provenance(fixture_runs, tmp_path):
    root, runs = fixture_runs
    out = tmp_path / "cal"
    res = runner.invoke(app, ["calibrate", "--runs", str(root), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    assert metrics["n_rows"] == 10 and metrics["n_attack_results"] == 15
    for name in (
        "calibration.md",
        "calibration.csv",
        "calibration.json",
        "metrics.json",
        "meta.json",
        "equivalent.csv",
        "accuracy_matched.csv",
        "tables/table7_delta.csv",
        "frontier-loss-auc.png",
        "frontier-iga-mse.png",
        "roc-loss.png",
        "grids/iga-vmf.png",
        "plots/frontier/loss-auc.csv",
        "plots/roc/loss.csv",
    ):
        assert (out / name).is_file(), name
    with open(out / "calibration.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["run_meta_sha256"] for r in rows} >= {
        file_hash(p / "meta.json") for p in runs.values()
    }
    meta = json.loads((out / "meta.json").read_text())
    assert meta["stage"] == "calibrate"
    assert meta["inputs"]["sources"][str(runs["g1"])] == file_hash(runs["g1"] / "meta.json")
    assert set(meta["outputs"]) >= {"calibration.md", "frontier-loss-auc.png"}
    md = (out / "calibration.md").read_text()
    assert "Paper 1 Table 7 view" in md and "protects like gaussian" in md
    with open(out / "plots/frontier/loss-auc.csv", newline="") as f:
        assert {"score", "test_accuracy", "epsilon_nominal"} <= set(next(csv.DictReader(f)))


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt"])
def test_bad_input_is_one_line_and_exit_1(tmp_path, case):
    runs = tmp_path / "runs"
    if case != "missing":
        (runs / "train" / "x").mkdir(parents=True)
    if case == "corrupt":
        run = make_train(runs / "train", "g1", epsilon=1)
        (run / "metrics.json").write_text("{not json")
    out = tmp_path / "out"
    res = runner.invoke(app, ["calibrate", "--runs", str(runs), "--out", str(out)])
    assert res.exit_code == 1
    assert res.output.count("\n") == 1 and res.output.startswith("error:")
    assert "Traceback" not in res.output and not out.exists()


def test_unknown_calibrate_key_names_the_valid_ones(fixture_runs, tmp_path):
    root, _ = fixture_runs
    res = runner.invoke(
        app,
        [
            "calibrate",
            "--runs",
            str(root),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "calibrate.tolerance=0.1",
        ],
    )
    assert res.exit_code == 1 and "accuracy_tolerance" in res.output
    with pytest.raises(PrivtoolError, match="judged_by.membership"):
        calibrate_settings({"judged_by": {"membership": "mse"}})


def test_fixture_templates_are_real_stage_outputs():
    """Guard against drift: the templates carry what the real stages record."""
    meta, m = template("attack-loss")
    assert meta["stage"] == "attack" and m["kind"] == "membership"
    assert {"auc", "n_in", "n_out", "tpr_at_0.1pct_fpr", "epsilon_lower_bound"} <= set(m)
    meta, m = template("train-vmf")
    assert meta["stage"] == "train" and "epsilon_v_nominal" in m and m["checkpoints"]
    meta, _ = template("select")
    assert meta["stage"] == "select" and "meta_sha256" in meta["inputs"]["parent"]
    assert write_stage and auc_signal(0.5) == pytest.approx(0.0)


def test_full_profile_overlay_gives_valid_params_with_the_papers_grid(tmp_path):
    """params-full.yaml applied as README "Reproducing the papers" says."""
    from pathlib import Path

    import yaml

    top = Path(__file__).resolve().parents[1]
    base = yaml.safe_load((top / "params.yaml").read_text())
    full = yaml.safe_load((top / "params-full.yaml").read_text())
    for section, values in full.items():
        base.setdefault(section, {}).update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    p = load_params(tmp_path / "params.yaml", required=True)
    assert p.data.dataset == "mnist" and p.raw["calibrate"]["baseline"] == "gaussian"
    cells = p.raw["sweep"]["train"]
    for model in ("lenet", "mlp"):
        mine = {k: v for k, v in cells.items() if k.startswith(f"{model}-")}
        eps_g = sorted(
            float(v["args"].split("--epsilon ")[1].split()[0])
            for v in mine.values()
            if v["mech"] == "gaussian"
        )
        eps_v = sorted(
            float(v["args"].split("epsilon_v=")[1].split()[0])
            for v in mine.values()
            if v["mech"] == "vmf"
        )
        assert eps_g == [0.8, 1, 2, 3, 8, 50] and eps_v == [1, 5, 10, 50, 500, 300000]
        assert sum(v["mech"] == "none" for v in mine.values()) == 1
        # paper 1 §3.4: VMF noise per row of each layer
        assert all("train.partition=row" in v["args"] for v in mine.values() if v["mech"] == "vmf")
        assert all(("--model mlp" in v["args"]) == (model == "mlp") for v in mine.values())
    assert {v["store"] for v in cells.values()} == set(p.raw["sweep"]["store"])
    # every cell dvc.yaml names through sweep.* must be a cell of the overlaid sweep
    assert {s["target"] for s in p.raw["sweep"]["store"].values()} <= set(cells)
    assert p.raw["sweep"]["select"]["target"] in cells
    assert set(p.raw["sweep"]["audit"]) <= set(cells)
