"""What a run releases (issue 22): secret noise, release vs diagnostics, export, δ sanity."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from privtool.accounting.delta import check_delta
from privtool.artifacts import load_state_dict
from privtool.cli import app
from privtool.errors import PrivtoolError
from privtool.release import NOISE_REPRODUCIBLE, NOISE_SECRET, split_metrics

runner = CliRunner()
TINY = [
    "--dataset",
    "digits",
    "--model",
    "softmax",
    "--epochs",
    "2",
    "--device",
    "cpu",
    "--set",
    "train.batch_size=64",
]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def train(out, *extra):
    res = invoke("train", *TINY, *extra, "--seed", 4, "--out", out, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Defaults (an empty params file; the repo's params.yaml sets from-seed for the pipeline)."""
    root = tmp_path_factory.mktemp("release")
    (root / "empty.yaml").write_text("{}\n")
    out = {}
    for name, extra in {
        "s1": ["--mech", "gaussian", "--epsilon", 3],
        "s2": ["--mech", "gaussian", "--epsilon", 3],
        "r1": ["--mech", "gaussian", "--epsilon", 3, "--set", "train.noise_seed=from-seed"],
        "r2": ["--mech", "gaussian", "--epsilon", 3, "--set", "train.noise_seed=from-seed"],
        "cls": ["--mech", "class", "--epsilon", 8],
    }.items():
        out[name] = (root / name, train(root / name, "--params", root / "empty.yaml", *extra))
    return out


def test_secret_noise_differs_from_seed_noise_is_bit_identical_and_labelled(runs):
    w = {k: load_state_dict(runs[k][0] / "model.pt") for k in ("s1", "s2", "r1", "r2")}
    assert not same(w["s1"], w["s2"])  # same seed, secret noise: different models
    assert same(w["r1"], w["r2"])  # from-seed: bit-identical
    assert runs["s1"][1]["noise"] == NOISE_SECRET and runs["s1"][1]["noise_seed"] == "secret"
    assert runs["r1"][1]["noise"] == NOISE_REPRODUCIBLE
    # the noise level and ε do not depend on where the noise comes from
    assert runs["s1"][1]["epsilon"] == runs["r1"][1]["epsilon"]
    # the secret seed is written nowhere in the run directory
    meta = (runs["s1"][0] / "meta.json").read_text()
    assert '"noise_seed": "secret"' in meta and "urandom" not in meta


def test_metrics_split_release_and_diagnostics(runs):
    m = json.loads((runs["cls"][0] / "metrics.json").read_text())
    rel, diag = m["release"], m["diagnostics"]
    for key in ("train_accuracy", "train_gap", "train_loss", "largest_unit"):
        assert key in diag and key not in rel and key in m  # flat field kept for old readers
    assert rel["epsilon_class"] == m["epsilon_class"] and "test_accuracy" in rel
    assert all("train_accuracy" not in c for c in rel["checkpoints"])
    assert [c["epoch"] for c in diag["checkpoints"]] == [1, 2]
    assert split_metrics({"x": 1, "train_gap": 0.1})["release"] == {"x": 1}


def test_checkpoints_record_the_epsilon_of_releasing_them_all(runs):
    m = runs["s1"][1]
    assert [c["epsilon_if_all_checkpoints_released"] for c in m["checkpoints"]] == [
        m["epsilon"]
    ] * 2
    assert m["checkpoints"][0]["epsilon"] < m["epsilon"]


def test_export_copies_only_the_release(runs, tmp_path):
    run, m = runs["cls"]
    assert (run / "units.npy").is_file()
    res = invoke("export", run, "--out", tmp_path / "share", "--json")
    assert res.exit_code == 0, res.output
    files = sorted(
        p.relative_to(tmp_path / "share").as_posix()
        for p in (tmp_path / "share").rglob("*")
        if p.is_file()
    )
    assert files == [
        "accountant.json",
        "checkpoints/epoch-1.pt",
        "checkpoints/epoch-2.pt",
        "meta.json",
        "metrics.json",
        "model.pt",
    ]
    shared = json.loads((tmp_path / "share" / "metrics.json").read_text())
    text = (tmp_path / "share" / "metrics.json").read_text() + (
        tmp_path / "share" / "accountant.json"
    ).read_text()
    for key in ("train_accuracy", "train_gap", "train_loss", "largest_unit"):
        assert f'"{key}"' not in text
    assert shared["epsilon_class"] == m["epsilon_class"] and shared["noise"] == NOISE_SECRET
    assert "seed" not in shared and "seed" in m
    meta = json.loads((tmp_path / "share" / "meta.json").read_text())
    assert {"units.npy", "plots/curve.csv", "splits.npz"} <= set(meta["left_out_files"])
    assert same(load_state_dict(tmp_path / "share" / "model.pt"), load_state_dict(run / "model.pt"))


def test_export_of_a_reproducible_run_warns_and_bad_input_is_one_line(runs, tmp_path):
    res = invoke("export", runs["r1"][0], "--out", tmp_path / "r")
    assert res.exit_code == 0 and "ε holds only while it stays secret" in res.stderr
    res = invoke("export", tmp_path / "missing", "--out", tmp_path / "x")
    assert res.exit_code == 1 and res.stderr.count("\n") == 1 and "Traceback" not in res.output
    assert not (tmp_path / "x").exists()


def test_delta_at_or_above_one_over_n_is_refused(tmp_path):
    assert check_delta(1e-5, 1000) is None
    assert "1/(10·n)" in check_delta(5e-4, 1000)
    with pytest.raises(PrivtoolError, match=r"train.delta=0.001 is not below 1/n = 1/1000"):
        check_delta(1e-3, 1000)
    # digits (1797) × data.splits.train (≤ 0.5) < 1000 records: δ = 0.002 ≥ 1/n is refused
    # before anything is written, naming n
    res = invoke(
        "train", *TINY, "--mech", "gaussian", "--set", "train.delta=0.002", "--out", tmp_path / "d"
    )
    n = int(re.search(r"1/n = 1/(\d+) ", res.stderr).group(1))
    assert res.exit_code == 1 and 500 < n < 1000 and not (tmp_path / "d").exists()
    assert f"({n} training records)" in res.stderr and res.stderr.count("\n") == 1
    # class-level DP: δ is compared with the 10 classes
    res = invoke(
        "train", *TINY, "--mech", "class", "--set", "train.delta=0.1", "--out", tmp_path / "c"
    )
    assert res.exit_code == 1 and "10 class units" in res.stderr
    res = invoke(
        "epsilon",
        "--mech",
        "gaussian",
        "--noise-multiplier",
        1,
        "--sample-rate",
        0.01,
        "--steps",
        10,
        "--delta",
        1e-3,
        "--n",
        1000,
    )
    assert res.exit_code == 1 and "--delta=0.001" in res.stderr
    res = invoke(
        "epsilon",
        "--mech",
        "gaussian",
        "--noise-multiplier",
        1,
        "--sample-rate",
        0.01,
        "--steps",
        10,
        "--delta",
        5e-4,
        "--n",
        1000,
        "--json",
    )
    assert res.exit_code == 0 and "1/(10·n)" in json.loads(res.stdout)["delta_warning"]


def test_secret_generators_are_not_the_seeded_ones():
    from privtool.config import TrainConfig
    from privtool.release import noise_generators

    cfg = TrainConfig(seed=0)
    draws = [noise_generators(cfg, "cpu")[1].random(4) for _ in range(2)]
    assert not np.array_equal(draws[0], draws[1])
    seeded = noise_generators(TrainConfig(seed=0, noise_seed="from-seed"), "cpu")
    assert np.array_equal(seeded[1].random(4), np.random.default_rng(1).random(4))
    g = torch.Generator().manual_seed(2)
    assert torch.equal(torch.randn(3, generator=seeded[0]), torch.randn(3, generator=g))


def _gaussian_exact_epsilon(mu: float, delta: float) -> float:
    """ε at δ of a Gaussian mechanism with sensitivity/σ = mu (Balle & Wang 2018, Thm. 8),
    by bisection: an independent reference for the composed Gaussians."""
    from scipy.stats import norm

    def d(eps):
        return norm.cdf(mu / 2 - eps / mu) - np.exp(eps) * norm.cdf(-mu / 2 - eps / mu)

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if d(mid) > delta else (lo, mid)
    return hi


def test_whole_curve_composition_is_between_independent_bounds():
    """n NearPrivate cells (DP-PCA ε 0.5, δ 1e-5 classic σ; support ε 0.5, Δ₁ = 1 and 2):
    PLD ε ≥ that of the Gaussian parts alone (n Gaussians = one of μ√n, exact) and ≤ basic."""
    from privtool.select.budget import Cost
    from privtool.select.compose import compose_curve
    from privtool.select.dp_pca import classic_gaussian_sigma

    sigma = classic_gaussian_sigma(epsilon=0.5, delta=1e-5)
    parent = Cost("parent DP training", 2.0, 1e-5, "add/remove one record")
    per_cell = [
        Cost("DP-PCA (Analyze Gauss)", 0.5, 1e-5, parent.relation),
        Cost("support counts (Laplace)", 0.5, 0.0, parent.relation),
    ]
    for l1 in (1.0, 2.0):
        cell = {
            "dp_pca_sigma": sigma,
            "dp_pca_sensitivity": 1.0,
            "support_laplace_scale": l1 / 0.5,
            "support_sensitivity": l1,
        }
        for n in (1, 15):
            got = compose_curve(parent, per_cell, [cell] * n)
            assert got["delta_basic"] == pytest.approx(1e-5 + n * 1e-5)
            assert got["epsilon_basic"] == pytest.approx(2.0 + n * 1.0)
            assert got["delta_composed"] == pytest.approx(2e-5)  # PLD at one cell's δ
            lower = 2.0 + _gaussian_exact_epsilon(np.sqrt(n) / sigma, 1e-5)
            assert lower <= got["epsilon_composed"] <= got["epsilon_basic"] + 1e-9, (l1, n, got)
            assert got["n_private_releases"] == n
        assert got["epsilon_composed"] < 0.75 * got["epsilon_basic"]  # 15 cells: PLD wins
    # nothing private in the curve: the parent alone; a non-private parent: ∞
    assert compose_curve(parent, [], [])["epsilon_composed"] == 2.0
    assert (
        compose_curve(Cost("p", None, 0.0, "not private"), per_cell, [cell])["epsilon_composed"]
        is None
    )


def test_repo_params_keep_secret_noise_and_the_pipeline_cells_opt_into_from_seed():
    """A plain `privtool train` in the repo draws secret noise; only dvc.yaml's train cells
    (a research simulation DVC caches) ask for reproducible noise, through sweep.noise_seed."""
    from pathlib import Path

    import yaml

    top = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((top / "params.yaml").read_text())
    assert params["train"]["noise_seed"] == "secret"
    assert params["sweep"]["noise_seed"] == "from-seed"
    train_cmd = yaml.safe_load((top / "dvc.yaml").read_text())["stages"]["train"]["do"]["cmd"]
    assert "--set train.noise_seed=${sweep.noise_seed}" in train_cmd
