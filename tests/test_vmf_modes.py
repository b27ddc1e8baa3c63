"""train.vmf_mode: readings of paper 1 §3.4 (privtool.mechanisms.vmf_modes).

Noise distributions are checked by Monte-Carlo against scipy's Bessel functions (an independent
A_d(κ) = I_{d/2}(κ) / I_{d/2-1}(κ)); ``alg2`` against main's output before the modes existed
(tests/fixtures/vmf_alg2_step.json, written by tests/fixtures/make_vmf_alg2_step.py at commit
6ab060e: two VMF steps per partition on 32 digits); no-guarantee modes against every place an
ε could come from (train, epsilon, select budget, calibrate).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import ive
from typer.testing import CliRunner

from privtool.cli import app
from privtool.config import VMF_MODE_NAMES, TrainConfig
from privtool.errors import PrivtoolError
from privtool.mechanisms import MECHANISMS, Schedule
from privtool.mechanisms.vmf_modes import VMF_MODES, flat_clip, make_mode

FIXTURE = Path(__file__).parent / "fixtures" / "vmf_alg2_step.json"
NO_DP = ["opacus-add-unit", "opacus-add-scaled", "opacus-add-sample"]


def a_d(d: int, kappa: float) -> float:
    """Mean resultant length of VMF(κ) on S^{d-1}, from scipy (exponentially scaled I_ν)."""
    return float(ive(d / 2, kappa) / ive(d / 2 - 1, kappa))


def test_mode_names_match_config_and_only_alg2_has_a_guarantee():
    assert set(VMF_MODES.names()) == set(VMF_MODE_NAMES)
    assert [n for n in VMF_MODES.names() if VMF_MODES.get(n).guarantee] == ["alg2"]
    for name in VMF_MODES.names():
        assert VMF_MODES.get(name).paper  # each names the sentence it implements
    with pytest.raises(PrivtoolError, match="train.vmf_mode"):
        TrainConfig(mech="vmf", vmf_mode="opacus")


def _same_direction_batch(b: int, rows: int, d: int, seed: int = 0):
    """Per-sample gradients of one (rows, d) weight whose rows all point along one direction
    (so one release gives `rows` iid draws around it), plus a bias; and that direction."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    mu /= mu.norm()
    scale = 0.5 + torch.rand(b, 1, 1, generator=g, dtype=torch.float64)
    w = scale * mu.expand(b, rows, d)
    bias = torch.randn(b, 3, generator=g, dtype=torch.float64)
    return [w, bias], mu


@pytest.mark.parametrize(
    "name,kappa",
    [
        ("opacus-add-unit", 3.0),
        ("opacus-add-unit", 40.0),
        ("opacus-add-scaled", 3.0),
        ("opacus-add-sample", 6.0),
    ],
)
def test_added_noise_is_scaled_vmf_around_the_clipped_direction(name, kappa):
    """noise = release − Σ clip(g_i) per row: norm C (κC scaled), mean direction μ and mean
    resultant length A_d(κ) (per-sample mode: B draws around each sample's direction)."""
    b, rows, d, c = (1 if name == "opacus-add-sample" else 4), 4000, 5, 0.7
    grads, mu = _same_direction_batch(b, rows, d)
    mode = make_mode(name, kappa=kappa, partition="row", max_grad_norm=c)
    out = mode.release(grads, torch.Generator().manual_seed(1))
    clipped_sum = [g.sum(0) for g in flat_clip(grads, c, 1)]
    noise = out[0] - clipped_sum[0]
    scale = kappa * c if name == "opacus-add-scaled" else c
    assert torch.allclose(
        noise.norm(dim=1), torch.full((rows,), scale, dtype=noise.dtype), rtol=1e-9
    )
    mean = noise.mean(0) / scale
    r = float(mean.norm())
    assert abs(r - a_d(d, kappa)) < 4 / math.sqrt(rows)  # MC standard error ≈ 1/√rows
    assert float(mean @ mu) / r > 0.99 if kappa > 10 else float(mean @ mu) / r > 0.9
    # the bias (one part of 3) gets one unit draw too
    assert math.isclose(float((out[1] - clipped_sum[1]).norm()), scale, rel_tol=1e-9)


def test_alg2_rows_are_unit_vmf_draws_around_each_row():
    grads, mu = _same_direction_batch(1, 4000, 5)
    kappa = 4.0
    out = make_mode("alg2", kappa=kappa, partition="row").release(
        grads, torch.Generator().manual_seed(2)
    )[0]
    assert torch.allclose(out.norm(dim=1), torch.ones(4000, dtype=out.dtype), rtol=1e-9)
    assert abs(float(out.mean(0) @ mu) - a_d(5, kappa)) < 4 / math.sqrt(4000)


@pytest.mark.parametrize("name", VMF_MODE_NAMES)
@pytest.mark.parametrize("partition", ["whole", "row"])
def test_expected_is_the_mean_of_the_release(name, partition):
    """What the IGA attacker matches (expected) is the Monte-Carlo mean of the release / B
    (within 5 standard errors per coordinate)."""
    g = torch.Generator().manual_seed(3)
    grads = [
        torch.randn(3, 4, 6, generator=g, dtype=torch.float64),
        torch.randn(3, 4, generator=g, dtype=torch.float64),
    ]
    mode = make_mode(name, kappa=2.0, partition=partition, max_grad_norm=0.8)
    gen = torch.Generator().manual_seed(4)
    draws = torch.stack(
        [torch.cat([r.reshape(-1) for r in mode.release(grads, gen)]) / 3 for _ in range(400)]
    )
    exp = torch.cat([e[0].reshape(-1) for e in mode.expected([x.unsqueeze(0) for x in grads])])
    se = draws.std(0) / math.sqrt(len(draws))
    assert bool(((draws.mean(0) - exp).abs() <= 5 * se + 1e-12).all())


def test_alg2_step_is_unchanged_from_main():
    """One VMF step per partition gives main's weights (tests/fixtures/vmf_alg2_step.json)."""
    from privtool.data import load_dataset
    from privtool.models import build_model

    ref = json.loads(FIXTURE.read_text())
    d = load_dataset("digits")
    x, y = torch.from_numpy(d.x[:32]), torch.from_numpy(d.y[:32])
    for case in ref["cases"]:
        torch.manual_seed(0)
        model = build_model("lenet", d.shape, 10)
        cfg = TrainConfig(
            mech="vmf",
            batch_size=32,
            kappa=case["kappa"],
            partition=case["partition"],
            vmf_mode="alg2",
        )
        m = MECHANISMS.get("vmf")(cfg, Schedule(n=320, batch_size=32, epochs=1))
        m.calibrate(model)
        step = m.make_stepper(
            model, torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator().manual_seed(123)
        )
        loss, correct = step(x, y)
        loss2, _ = step(x, y)
        assert (loss, correct) == (pytest.approx(case["loss"], rel=1e-6), case["correct"])
        assert loss2 == pytest.approx(case["loss2"], rel=1e-6)
        sums = [float(p.detach().double().sum()) for p in model.parameters()]
        norms = [float(p.detach().double().norm()) for p in model.parameters()]
        np.testing.assert_allclose(sums, case["sums"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(norms, case["norms"], rtol=1e-5)


@pytest.fixture(scope="module")
def no_dp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "train" / "add-unit"
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--mech",
            "vmf",
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--epochs",
            "2",
            "--set",
            "train.batch_size=64",
            "--set",
            "train.vmf_mode=opacus-add-unit",
            "--set",
            "train.epsilon_v=50",
            "--set",
            "train.partition=row",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    return out


def test_no_guarantee_run_records_no_epsilon(no_dp_run):
    m = json.loads((no_dp_run / "metrics.json").read_text())
    assert m["epsilon"] is None and m["dp_guarantee"] == "none"
    assert "2C" in m["dp_guarantee_reason"] and m["vmf_mode"] == "opacus-add-unit"
    assert m["epsilon_v_setting"] == pytest.approx(50.0)
    assert m["sampling"] == "poisson" and m["test_accuracy"] > 0.3  # it trains
    eps = {k: v for k, v in m.items() if k.startswith("epsilon") and k != "epsilon_v_setting"}
    assert eps == {"epsilon": None}
    assert all(c["epsilon"] is None for c in m["checkpoints"])


def test_no_guarantee_modes_refuse_an_epsilon_target_and_privtool_epsilon():
    for name in NO_DP:
        cfg = TrainConfig(mech="vmf", epsilon=8.0, vmf_mode=name)
        mech = MECHANISMS.get("vmf")(cfg, Schedule(n=100, batch_size=10, epochs=1))
        with pytest.raises(PrivtoolError, match="no DP guarantee"):
            mech.calibrate(torch.nn.Linear(3, 2))
        res = CliRunner().invoke(
            app,
            [
                "epsilon",
                "--mech",
                "vmf",
                "--kappa",
                "5",
                "--sample-rate",
                "0.1",
                "--steps",
                "10",
                "--vmf-mode",
                name,
            ],
        )
        assert res.exit_code == 1 and "no DP guarantee" in res.output
    res = CliRunner().invoke(
        app,
        [
            "epsilon",
            "--mech",
            "vmf",
            "--kappa",
            "5",
            "--sample-rate",
            "0.1",
            "--steps",
            "10",
            "--vmf-mode",
            "alg2",
            "--json",
        ],
    )
    assert res.exit_code == 0 and json.loads(res.output)["epsilon"] > 0


def test_select_budget_refuses_a_no_guarantee_parent(no_dp_run):
    from privtool.select.budget import Candidate, choose_parent

    m = json.loads((no_dp_run / "metrics.json").read_text())
    cands = [Candidate(f"{no_dp_run}@{c['epoch']}", c["epoch"], c) for c in m["checkpoints"]]
    with pytest.raises(PrivtoolError, match="no DP guarantee"):
        choose_parent(
            cands, mechanism="vmf", metrics=m, extra=[], limit=1e9, pinned=False, what="nothing"
        )
    assert (
        choose_parent(
            cands, mechanism="vmf", metrics=m, extra=[], limit=None, pinned=False, what="nothing"
        ).epsilon
        is None
    )


def test_calibrate_labels_no_guarantee_runs(no_dp_run):
    from privtool.calibrate.collect import collect
    from privtool.calibrate.paper import epsilon_table
    from privtool.calibrate.rows import build_rows
    from privtool.calibrate.settings import CalibrateConfig

    rows = build_rows(collect(no_dp_run.parent), CalibrateConfig())
    (row,) = rows
    assert row["series"] == "vmf:opacus-add-unit (no DP guarantee)"
    assert row["dp_guarantee"] == "none" and row["epsilon"] is None
    assert row["epsilon_nominal"] == pytest.approx(50.0)
    assert row["epsilon_nominal_source"] == "epsilon_v_setting (no DP guarantee)"
    assert "no DP guarantee" in epsilon_table(rows).to_markdown()


def test_forensics_agreement_statistics():
    """scripts/forensics.py: ρ = 1 for ours in the paper's order, −1 reversed; mean |Δ|."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "forensics", Path(__file__).parents[1] / "scripts" / "forensics.py"
    )
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    eps = [1, 50, 500, 300000]
    rows = [
        {
            "model": "lenet",
            "mode": "alg2",
            "epsilon_v": float(e),
            "accuracy %": fx.PAPER["lenet"][e][0] + 2.0,
            "MIA-R AUC %": None,
            "IGA MSE": -fx.PAPER["lenet"][e][2],
        }
        for e in eps
    ]
    stats = {s["metric"]: s for s in fx.compare(rows)}
    assert set(stats) == {"accuracy %", "IGA MSE"}  # no AUC measured: no row
    acc, mse = stats["accuracy %"], stats["IGA MSE"]
    assert acc["spearman"] == pytest.approx(1.0) and acc["mean_abs_diff"] == pytest.approx(2.0)
    assert mse["spearman"] == pytest.approx(-1.0)
    assert acc["spread_paper"] == pytest.approx(83.9 - 81.5)
