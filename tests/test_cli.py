"""The command-line contract (SPEC §1): commands, --json, exit codes, artifacts."""

import json

import pytest
import torch
from conftest import DIGITS_FAST
from typer.testing import CliRunner

from privtool.artifacts import load_run, load_state_dict
from privtool.cli import app

runner = CliRunner()
FAST = list(DIGITS_FAST)  # the flags of the shared digits runs (conftest.py)


def invoke(*args):
    return runner.invoke(app, list(args))


def test_help_lists_every_command():
    res = invoke("--help")
    assert res.exit_code == 0
    for cmd in ("train", "attack", "select", "calibrate", "epsilon", "data"):
        assert cmd in res.output


@pytest.mark.parametrize("mech", ["none", "gaussian", "vmf"])
def test_train_writes_a_complete_run(digits_run, mech):
    extra = ["--set", "train.epsilon_v=500000"] if mech == "vmf" else []
    run = digits_run("--mech", mech, *extra)  # `train --mech MECH *extra *FAST --json`
    out = run.dir
    metrics = json.loads(run.stdout)  # stdout holds exactly one JSON object
    assert metrics["mechanism"] == mech and metrics["dataset"] == "digits"
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_accuracy"] > 0.3
    for key in ("train_accuracy", "train_gap", "steps", "sample_rate", "seed", "model"):
        assert key in metrics
    run = load_run(out)
    assert run["metrics"] == json.loads((out / "metrics.json").read_text())
    meta = run["meta"]
    assert meta["params"]["train"]["mech"] == mech
    assert set(meta["inputs"]["data"]["splits"]) >= {"train", "test", "shadow", "public"}
    state = load_state_dict(out / "model.pt")
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    curve = (out / "plots" / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,") and len(curve) == 3
    acct = json.loads((out / "accountant.json").read_text())
    assert acct["mechanism"] == mech
    if mech == "gaussian":
        from opacus.accountants import RDPAccountant

        assert metrics["noise_multiplier"] == 1.0 and metrics["accountant"] == "rdp"
        acc = RDPAccountant()
        acc.history = [(1.0, metrics["sample_rate"], metrics["steps"])]
        assert metrics["epsilon"] == pytest.approx(acc.get_epsilon(metrics["delta"]), rel=1e-12)
    if mech == "vmf":
        assert metrics["kappa"] == 250000.0 and metrics["epsilon_v_nominal"] == 500000.0
        assert metrics["epsilon_step"] == 500000.0 and metrics["epsilon"] > metrics["epsilon_step"]


def test_gaussian_epsilon_target_and_epsilon_command_agree(digits_run):
    m = json.loads(digits_run("--mech", "gaussian", "--epsilon", "2").stdout)
    assert 1.9 < m["epsilon"] <= 2.0
    res = invoke(
        "epsilon",
        "--mech",
        "gaussian",
        "--noise-multiplier",
        str(m["noise_multiplier"]),
        "--sample-rate",
        str(m["sample_rate"]),
        "--steps",
        str(m["steps"]),
        "--delta",
        str(m["delta"]),
        "--json",
    )
    assert res.exit_code == 0
    assert json.loads(res.stdout)["epsilon"] == pytest.approx(m["epsilon"], rel=1e-9)


def test_epsilon_from_epochs_counts_steps_as_train_does(tmp_path):
    """n/b = 539/100 = 5.39 (odd): train runs round(n/b)·E = 15 steps for E = 3, and
    `privtool epsilon --epochs 3` must give the ε of those steps (round(E/q) = 16 would not)."""
    out = tmp_path / "g"
    res = invoke(
        "train",
        "--mech",
        "gaussian",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        "3",
        "--set",
        "train.batch_size=100",
        "--set",
        "train.noise_multiplier=1.1",
        "--set",
        "train.checkpoint_every=0",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--json",
    )
    assert res.exit_code == 0, res.output
    acc = json.loads((out / "accountant.json").read_text())
    assert acc["steps"] == 15 and round(3 / acc["sample_rate"]) == 16
    res = invoke(
        "epsilon",
        "--mech",
        "gaussian",
        "--noise-multiplier",
        "1.1",
        "--sample-rate",
        repr(acc["sample_rate"]),
        "--epochs",
        "3",
        "--delta",
        str(acc["delta"]),
        "--json",
    )
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["steps"] == acc["steps"]
    assert got["epsilon"] == pytest.approx(acc["epsilon"], rel=1e-9)


def test_unit_mechanisms_count_epoch_steps_as_epsilon_does():
    """class/subclass: an epoch is round(1/q) steps in train and in `privtool epsilon`."""
    from privtool.epsilon import steps_from
    from privtool.mechanisms.unit import UnitSchedule

    for q, epochs in ((0.3, 3), (0.2, 4), (0.07, 5)):
        sched = UnitSchedule(n=100, batch_size=1, epochs=epochs, unit_rate=q)
        assert steps_from(steps=None, epochs=epochs, sample_rate=q) == sched.steps


def test_same_seed_same_metrics(tmp_path):
    outs = []
    for name in ("a", "b"):
        res = invoke(
            "train", "--mech", "gaussian", *FAST, "--seed", "3", "--out", str(tmp_path / name)
        )
        assert res.exit_code == 0, res.output
        outs.append((tmp_path / name / "metrics.json").read_text())
    assert outs[0] == outs[1]


def test_epsilon_pinned_opacus_value():
    res = invoke(
        "epsilon",
        "--mech",
        "gaussian",
        "--noise-multiplier",
        "1.5",
        "--sample-rate",
        "0.04",
        "--steps",
        "2250",
        "--delta",
        "1e-5",
        "--accountant",
        "rdp",
        "--json",
    )
    assert res.exit_code == 0
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(1.5, 0.04, 2250)]
    assert json.loads(res.stdout)["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)


def test_epsilon_vmf_json():
    res = invoke(
        "epsilon",
        "--mech",
        "vmf",
        "--kappa",
        "2",
        "--parts",
        "3",
        "--sample-rate",
        "0.01",
        "--steps",
        "100",
        "--json",
    )
    assert res.exit_code == 0
    d = json.loads(res.stdout)
    assert d["epsilon_step"] == 12.0 and d["epsilon"] < 100 * d["epsilon_step_amplified"]


@pytest.mark.parametrize(
    "args, match",
    [
        (["train", "--dataset", "imagenet42"], "unknown dataset 'imagenet42'"),
        (
            ["train", "--dataset", "cifar10", "--set", "data.root=/nonexistent"],
            "cifar-10-batches-py",
        ),
        (["train", "--model", "resnet"], "unknown model 'resnet'"),
        (["train", "--mech", "laplace"], "unknown mechanism 'laplace'"),
        (["train", "--epsilon", "0"], "train.epsilon=0"),
        (["train", "--epsilon", "-1"], "train.epsilon=-1"),
        (["train", "--set", "train.kappa=-1", "--mech", "vmf"], "train.kappa=-1"),
        (["train", "--set", "train.bogus=1"], "unknown params key train.bogus"),
        (["train", "--params", "missing.yaml"], "not found"),
        (
            [
                "epsilon",
                "--mech",
                "gaussian",
                "--noise-multiplier",
                "1",
                "--sample-rate",
                "1.5",
                "--steps",
                "10",
            ],
            "sample_rate",
        ),
        (
            ["epsilon", "--mech", "vmf", "--kappa", "-1", "--sample-rate", "0.1", "--steps", "10"],
            "kappa",
        ),
    ],
)
def test_bad_input_is_one_line_exit_1(tmp_path, args, match):
    out = tmp_path / "never"
    res = invoke(*args, *(["--out", str(out)] if args[0] == "train" else []))
    assert res.exit_code == 1, res.output
    assert match in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_data_list_json_marks_availability():
    res = invoke("data", "list", "--json")
    assert res.exit_code == 0
    rows = {d["name"]: d for d in json.loads(res.stdout)["datasets"]}
    assert rows["digits"]["available"] and rows["mnist-5k"]["available"]
    assert not rows["cifar10"]["available"] or rows["cifar10"]["n_examples"]
    if not rows["cifar10"]["available"]:
        assert rows["cifar10"]["missing"]


def test_train_threads_sets_torchs_intra_op_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        res = invoke(
            "train",
            "--mech",
            "none",
            *FAST,
            "--epochs",
            "1",
            "--set",
            "train.threads=1",
            "--out",
            str(tmp_path / "run"),
        )
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 1
        bad = invoke(
            "train",
            "--mech",
            "none",
            *FAST,
            "--set",
            "train.threads=0",
            "--out",
            str(tmp_path / "bad"),
        )
        assert bad.exit_code == 1 and "train.threads" in bad.output
        assert not (tmp_path / "bad").exists()
    finally:
        torch.set_num_threads(before)
