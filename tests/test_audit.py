"""privtool audit: canaries pass through the run's own mechanism, the CLI contract, the ε
sandwich in calibrate; slow power tests on mnist-5k (SPEC §6 Auditing)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from privtool.audit.canaries import GradientCanaries, draw_inclusion, input_canaries
from privtool.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_run):
    """Tiny digits runs: Gaussian without noise (σ = 0: the canaries must stand out), Gaussian
    at ε = 2, VMF at a large κ (conftest's shared digits runs, copied: audits
    here write into RUN/audit)."""
    root = tmp_path_factory.mktemp("audit")
    specs = {
        "gauss-s0": ["--mech", "gaussian", "--set", "train.noise_multiplier=0"],
        "gauss-eps2": ["--mech", "gaussian", "--epsilon", "2"],
        "vmf": ["--mech", "vmf", "--set", "train.kappa=100000"],
    }
    for name, args in specs.items():
        digits_run(*args, into=root / name)
    return root


def test_input_canaries_have_two_distinct_wrong_labels():
    y = np.arange(500) % 10
    idx, a, b = input_canaries(y, np.arange(100, 500), 300, 10, seed=3)
    assert len(set(idx)) == 300 and idx.min() >= 100
    assert not ((a == y[idx]) | (b == y[idx]) | (a == b)).any()
    member = draw_inclusion(4000, 1)
    assert 0.45 < member.mean() < 0.55 and not np.array_equal(member, draw_inclusion(4000, 2))


@pytest.mark.parametrize("direction", ["dirac", "random"])
def test_gradient_canaries_have_norm_c_and_score_by_inner_product(direction):
    c = GradientCanaries(20, 300, norm=1.5, direction=direction, seed=0)
    rows = c.rows(np.arange(20), np.r_[np.ones(10), -np.ones(10)], "cpu", torch.float64)
    assert torch.allclose(rows.norm(dim=1), torch.full((20,), 1.5, dtype=torch.float64))
    g = torch.randn(300, dtype=torch.float64)
    signs = np.r_[np.ones(10), -np.ones(10)]
    assert np.allclose(c.scores(g), (rows @ g).numpy() * signs)
    # the Gaussian fast path adds what Opacus' flat clipping of the appended rows would add
    for clip in (1.0, 2.0):
        factor = (clip / (rows.norm(dim=1) + 1e-6)).clamp(max=1.0)
        want = (factor[:, None] * rows).sum(0)
        got = c.clipped_sum(np.arange(20), signs, clip, "cpu", torch.float64)
        assert torch.allclose(got, want)


def test_noise_free_gradient_canaries_are_found(runs, tmp_path):
    """σ = 0: an included canary adds C/b to its coordinate in every step that samples it, so
    the audit must find them (and the accountant says ε = ∞: no violation possible)."""
    res = invoke(
        "audit", "--target", runs / "gauss-s0", "--canaries", 200, "--out", tmp_path / "a", "--json"
    )
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["epsilon_lb"] > 1.0 and m["mean_appearances_in"] > 0
    assert m["relation"] == "add/remove one record" and m["canaries"] == 200


def test_gaussian_audit_writes_the_sandwich(runs, tmp_path):
    out = tmp_path / "a"
    res = invoke(
        "audit", "--target", runs / "gauss-eps2", "--canaries", 200, "--out", out, "--json"
    )
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    run = json.loads((runs / "gauss-eps2" / "metrics.json").read_text())
    assert m["epsilon_accounted"] == pytest.approx(
        2.0, rel=0.02
    )  # the recipe's ε target, re-solved
    assert m["delta"] == run["delta"] and m["confidence"] == 0.95
    assert m["sandwich_holds"] and m["epsilon_lb"] <= m["epsilon_accounted"]
    # the schedule is that of n + M slots (fixed before the coins); n + M_in records are present
    assert m["n_train_with_canaries"] == run["n_train"] + 200
    assert m["records_present"] == run["n_train"] + m["canaries_in"]
    assert m["sample_rate"] == pytest.approx(64 / (run["n_train"] + 200))
    doc = json.loads((out / "audit.json").read_text())
    assert doc["estimators"]["one_run"]["epsilon_lb"] == m["epsilon_lb"]
    with np.load(out / "scores.npz") as z:
        assert z["scores"].shape == (1, 200) and z["member"].sum() == m["canaries_in"]
    assert (out / "scores.png").stat().st_size > 1000


def test_vmf_canaries_have_antipodal_twins(runs, tmp_path):
    res = invoke(
        "audit",
        "--target",
        runs / "vmf",
        "--canaries",
        100,
        "--out",
        tmp_path / "a",
        "--json",
        "--runs",
        2,
        "--set",
        "audit.workers=1",
    )
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    run = json.loads((runs / "vmf" / "metrics.json").read_text())
    assert m["relation"] == "replace one record"
    assert m["records_present"] == m["n_train_with_canaries"] == run["n_train"] + 100  # twins
    assert m["epsilon_lb"] > 0.5  # κ = 10⁵: the directions come through nearly intact
    assert m["sandwich_holds"] and "epsilon_lb_clopper_pearson" in m and "epsilon_lb_gdp" in m


def test_input_canaries_on_a_gaussian_run(runs, tmp_path):
    res = invoke(
        "audit",
        "--target",
        runs / "gauss-eps2",
        "--canary",
        "input",
        "--canaries",
        100,
        "--out",
        tmp_path / "a",
        "--json",
    )
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["canary"] == "input" and m["sandwich_holds"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--canary", "pixel"], "audit.canary"),
        (["--canaries", "1"], "audit.canaries"),
        (["--canary", "input", "--canaries", "100000"], "input canaries need"),
        (["--set", "audit.colour=1"], "unknown params key audit.colour"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, args, message):
    out = tmp_path / "a"
    res = invoke("audit", "--target", runs / "gauss-eps2", *args, "--out", out)
    assert res.exit_code == 1 and message in res.output
    assert "Traceback" not in res.output and not out.exists()


def test_calibrate_shows_the_sandwich(runs, tmp_path):
    res = invoke("audit", "--target", runs / "gauss-eps2", "--canaries", 100)
    assert res.exit_code == 0, res.output
    assert (runs / "gauss-eps2" / "audit" / "audit.json").is_file()  # default: RUN/audit
    res = invoke("calibrate", "--runs", runs, "--out", tmp_path / "cal", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_audits"] >= 1
    doc = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    tables = {t["name"]: t for t in doc["tables"]}
    sandwich = tables["sandwich"]
    col = sandwich["columns"].index("audited ε (lower) ≤ accounted ε (upper)")
    cells = [row[col] for row in sandwich["rows"]]
    assert cells and all("≤" in c and "VIOLATED" not in c for c in cells)
    assert "audited ε (lower) ≤ accounted ε (upper)" in tables["runs"]["columns"]


def _mnist_run(tmp_path, *args):
    out = tmp_path / "run"
    res = invoke(
        "train", "--dataset", "mnist-5k", *args, "--set", "train.noise_seed=from-seed", "--out", out
    )
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow
def test_power_input_canaries_on_a_non_private_run(tmp_path):
    """SPEC/issue 16: a non-private mnist-5k run with 1,000 input canaries gives one-run
    ε_lb ≥ 1 (the overfit MLP recipe of the default pipeline's mlp-none cell)."""
    run = _mnist_run(
        tmp_path,
        "--mech",
        "none",
        "--model",
        "mlp",
        "--epochs",
        "30",
        "--set",
        "train.epsilon=null",
    )
    res = invoke("audit", "--target", run, "--canary", "input", "--canaries", 1000, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["epsilon_lb"] >= 1.0


@pytest.mark.slow
def test_power_white_box_gaussian_eps4(tmp_path):
    """A white-box Dirac-canary audit of Gaussian DP-SGD accounted at ε = 4 gives one-run
    ε_lb ≥ 1, and never more than the accounted ε. MLP (its weights on MNIST's always-blank
    border pixels get no real gradient: quiet coordinates), large batches (q ≈ 0.31 over the
    n + M slots: the RDP accountant is tight there), 3,000 canaries."""
    run = _mnist_run(
        tmp_path,
        "--mech",
        "gaussian",
        "--model",
        "mlp",
        "--epsilon",
        "4",
        "--epochs",
        "30",
        "--set",
        "train.batch_size=1400",
        "--set",
        "train.checkpoint_every=0",
    )
    res = invoke("audit", "--target", run, "--canary", "gradient", "--canaries", 3000, "--json")
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert 1.0 <= m["epsilon_lb"] <= m["epsilon_accounted"]


def test_spike_score_sees_through_real_gradient_drift():
    """Per-step projections: a slowly drifting real-gradient part (different per coordinate),
    Poisson-sampled canary appearances (1 unit each) and Gaussian noise. The detrended per-step
    likelihood ratio finds the canaries where the plain sum drowns in the drift."""
    from privtool.audit.canaries import spike_scores
    from privtool.audit.estimators import epsilon_one_run

    rng = np.random.default_rng(0)
    steps, m, q, sigma = 400, 1000, 0.06, 0.9
    member = rng.random(m) < 0.5
    drift = np.cumsum(rng.normal(0, 0.3, (steps, m)), axis=0) + rng.normal(0, 20, m)
    z = drift + (rng.random((steps, m)) < q) * member + rng.normal(0, sigma, (steps, m))
    plain = epsilon_one_run(z.sum(0), member, delta=1e-5).epsilon_lb
    spikes = epsilon_one_run(spike_scores(z, q), member, delta=1e-5).epsilon_lb
    assert spikes > 0.8 and spikes > plain + 0.5
