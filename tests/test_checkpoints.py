"""Checkpoints with their ε (paper 2 §5.2) and rotation pre-training on public data (§4.2)."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from privtool.accounting.vmf_pld import parse_part_dims
from privtool.artifacts import MODEL, load_run, load_state_dict
from privtool.checkpoints import checkpoint_epochs, load_checkpoint, resolve_target
from privtool.cli import app
from privtool.config import load_params
from privtool.epsilon import compute_epsilon
from privtool.errors import PrivtoolError

runner = CliRunner()
FAST = [
    "--dataset",
    "digits",
    "--model",
    "mlp",
    "--set",
    "train.batch_size=64",
    "--device",
    "cpu",
    "--set",
    "train.noise_seed=from-seed",
]  # determinism checked


def invoke(*args):
    return runner.invoke(app, list(args))


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 3-epoch Gaussian run keeping checkpoints at epochs 2 and 3, a 2-epoch run with the
    same seed, and a 3-epoch VMF run keeping every epoch."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, args in {
        "g3": ["--mech", "gaussian", "--epochs", "3", "--set", "train.checkpoint_every=2"],
        "g2": ["--mech", "gaussian", "--epochs", "2", "--set", "train.checkpoint_every=0"],
        "v3": ["--mech", "vmf", "--epochs", "3", "--set", "train.epsilon_v=500000"],
    }.items():
        res = invoke("train", *FAST, *args, "--seed", "5", "--out", str(root / name), "--json")
        assert res.exit_code == 0, res.output
        out[name] = (root / name, json.loads(res.stdout))
    return out


def test_checkpoint_epochs():
    assert checkpoint_epochs(1, 3) == [1, 2, 3]
    assert checkpoint_epochs(2, 5) == [2, 4, 5]
    assert checkpoint_epochs(10, 3) == [3]
    assert checkpoint_epochs(0, 3) == []


def test_checkpoints_are_listed_hashed_and_in_the_curve(runs):
    run, metrics = runs["g3"]
    assert [c["epoch"] for c in metrics["checkpoints"]] == [2, 3]
    assert metrics["checkpoint_every"] == 2
    assert json.loads((run / "metrics.json").read_text()) == metrics  # strict JSON, same object
    meta = load_run(run)["meta"]
    for c in metrics["checkpoints"]:
        assert c["file"] == f"checkpoints/epoch-{c['epoch']}.pt" and c["file"] in meta["outputs"]
        assert c["train_gap"] == pytest.approx(c["train_accuracy"] - c["test_accuracy"])
        assert 0 < c["test_accuracy"] <= 1 and c["delta"] == metrics["delta"]
    last = metrics["checkpoints"][-1]
    assert (last["epsilon"], last["test_accuracy"], last["train_gap"]) == (
        metrics["epsilon"],
        metrics["test_accuracy"],
        metrics["train_gap"],
    )
    header, *rows = (run / "plots" / "curve.csv").read_text().splitlines()
    cols = header.split(",")
    assert {
        "epoch",
        "step",
        "epsilon",
        "train_accuracy",
        "test_accuracy",
        "train_gap",
        "checkpoint",
    } <= set(cols)
    kept = [r.split(",")[cols.index("checkpoint")] for r in rows]
    assert kept == ["", "checkpoints/epoch-2.pt", "checkpoints/epoch-3.pt"]
    assert not (runs["g2"][0] / "checkpoints").exists() and runs["g2"][1]["checkpoints"] == []


def test_checkpoint_epsilon_equals_privtool_epsilon(runs):
    _, m = runs["g3"]
    for c in m["checkpoints"]:
        want = compute_epsilon(
            "gaussian",
            noise_multiplier=m["noise_multiplier"],
            sample_rate=m["sample_rate"],
            steps=c["step"],
            delta=m["delta"],
        )
        assert c["epsilon"] == pytest.approx(want["epsilon"], rel=1e-12)
    c = m["checkpoints"][0]
    res = invoke(
        "epsilon",
        "--mech",
        "gaussian",
        "--noise-multiplier",
        str(m["noise_multiplier"]),
        "--sample-rate",
        repr(m["sample_rate"]),
        "--steps",
        str(c["step"]),
        "--delta",
        repr(m["delta"]),
        "--json",
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["epsilon"] == pytest.approx(c["epsilon"], rel=1e-12)
    _, v = runs["v3"]
    assert [c["epoch"] for c in v["checkpoints"]] == [1, 2, 3]
    for c in v["checkpoints"]:
        want = compute_epsilon(
            "vmf",
            kappa=v["kappa"],
            parts=v["parts"],
            sample_rate=v["sample_rate"],
            steps=c["step"],
            delta=v["delta"],
            part_dims=parse_part_dims(v["part_dims"]),
        )
        assert v["accounting"] == "pld"
        for key in ("epsilon", "epsilon_pure_bound", "epsilon_step", "epsilon_step_amplified"):
            assert c[key] == pytest.approx(want[key], rel=1e-12), key
    assert v["checkpoints"][0]["epsilon"] < v["checkpoints"][-1]["epsilon"]


def test_load_checkpoint_returns_exactly_that_epochs_weights(runs):
    run, metrics = runs["g3"]
    state2, info2 = load_checkpoint(f"{run}@2")
    # training is deterministic per seed: epoch 2 of the 3-epoch run is the 2-epoch run's model
    assert same_weights(state2, load_state_dict(runs["g2"][0] / MODEL))
    assert info2["epoch"] == 2 and info2["epsilon"] == metrics["checkpoints"][0]["epsilon"]
    assert info2["epsilon"] == pytest.approx(runs["g2"][1]["epsilon"], rel=1e-12)
    state3, info3 = load_checkpoint(f"{run}@3")
    assert same_weights(state3, load_state_dict(run / MODEL))
    final, info = load_checkpoint(run)
    assert same_weights(final, state3) and info["epsilon"] == info3["epsilon"] == metrics["epsilon"]
    assert not same_weights(state2, state3)


def test_missing_epoch_is_one_line_listing_the_available_ones(runs, tmp_path):
    run = runs["g3"][0]
    with pytest.raises(PrivtoolError, match=r"no checkpoint at epoch 1; available epochs: 2, 3"):
        load_checkpoint(f"{run}@1")
    with pytest.raises(PrivtoolError, match="keeps no per-epoch checkpoints"):
        load_checkpoint(f"{runs['g2'][0]}@1")
    with pytest.raises(PrivtoolError, match="epoch number"):
        load_checkpoint(f"{run}@last")
    res = invoke("attack", "--attack", "iga", "--target", f"{run}@7", "--out", str(tmp_path / "a"))
    assert res.exit_code == 1 and "available epochs: 2, 3" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    res = invoke(
        "attack",
        "--attack",
        "iga",
        "--target",
        str(run),
        "--checkpoint",
        "1",
        "--out",
        str(tmp_path / "a"),
    )
    assert res.exit_code == 1 and "no checkpoint at epoch 1; available epochs: 2, 3" in res.output


def test_truncated_checkpoint_is_refused(runs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(runs["g3"][0], bad)
    f = bad / "checkpoints" / "epoch-2.pt"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(PrivtoolError, match="epoch-2.pt does not match the hash"):
        load_checkpoint(f"{bad}@2")


def test_a_stage_targeting_run_at_epoch_uses_that_checkpoint(runs):
    from privtool.attacks.target import load_target

    run = runs["g3"][0]
    target = load_target(f"{run}@2", torch.device("cpu"))
    state, info = load_checkpoint(f"{run}@2")
    assert same_weights(target.state_dict, state)
    assert target.privacy["epsilon"] == info["epsilon"] and target.describe()["target_epoch"] == 2
    assert resolve_target(str(run), 2) == f"{run}@2"
    with pytest.raises(PrivtoolError, match="give one of them"):
        resolve_target(f"{run}@3", 2)


# ---------------------------------------------------------------- rotation pre-training


def test_rotate_images_gives_four_labelled_rotations():
    from privtool.pretrain import rotate_images

    x = torch.rand(3, 1, 5, 5)
    views, labels = rotate_images(x)
    assert views.shape == (12, 1, 5, 5) and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert torch.equal(views[:3], x) and torch.equal(views[3:6], torch.rot90(x, 1, (2, 3)))
    assert torch.equal(torch.rot90(views[6:9], 2, (2, 3)), x)
    wide, labels = rotate_images(torch.rand(2, 3, 6, 10))  # non-square: centre crop, rotate, resize
    assert wide.shape == (8, 3, 6, 10) and len(labels) == 8


def _params(*sets):
    return load_params(None, ["train.device=cpu", "pretrain.method=rotation", *sets])


def test_pretrain_refuses_private_records(tmp_path):
    from privtool.pretrain import public_source
    from privtool.stages.common import load_data_and_splits

    p = _params("pretrain.split=train")
    data, splits = load_data_and_splits(p.data)
    with pytest.raises(PrivtoolError, match="private training records"):
        public_source(p, data, splits)
    with pytest.raises(PrivtoolError, match="not a split"):
        public_source(_params("pretrain.split=nope"), data, splits)
    # another dataset that holds private training images (here: a copy of 300 of them)
    leak = tmp_path / "leak.npz"
    idx = splits["train"][:300]
    np.savez(leak, x=np.round(data.x[idx, 0] * 255).astype(np.uint8), y=data.y[idx])
    with pytest.raises(PrivtoolError, match="300 of the 300 pre-training images"):
        public_source(_params(f"pretrain.dataset=npz:{leak}"), data, splits)


def test_pretrain_source_is_recorded_and_disjoint():
    from privtool.data import index_hash
    from privtool.pretrain import public_source
    from privtool.stages.common import load_data_and_splits

    p = _params()
    data, splits = load_data_and_splits(p.data)
    x, rec = public_source(p, data, splits)
    assert rec["split"] == "public" and rec["index_sha256"] == index_hash(splits["public"])
    assert not set(splits["public"]) & set(splits["train"]) and len(x) == len(splits["public"])
    assert rec["labels_used"] is False and rec["privacy_cost"] == 0
    x, rec = public_source(_params("pretrain.dataset=digits"), data, splits)  # 8x8 -> 28x28
    assert x.shape == (1797, 1, 28, 28) and rec["split"] == "all"
    assert rec["adapted"] == "resized 8x8 to 28x28" and rec["overlap_with_private_train"] == 0


@pytest.mark.parametrize("model", ["lenet", "lenet-sigmoid", "mlp", "cnn", "softmax", "tfp-cnn"])
def test_every_model_pretrains_features_and_keeps_a_fresh_head(model):
    from privtool.models import MODELS, build_model
    from privtool.pretrain import pretrain
    from privtool.stages.common import load_data_and_splits

    assert set(MODELS.names()) <= {"lenet", "lenet-sigmoid", "mlp", "cnn", "softmax", "tfp-cnn"}
    p = _params(
        f"train.model={model}",
        "pretrain.epochs=1",
        "data.splits.public=0.04",
        "data.splits.train=0.56",
    )
    data, splits = load_data_and_splits(p.data)
    torch.manual_seed(0)
    net = build_model(model, data.shape, data.n_classes)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    res = pretrain(p, net, data, splits, device=torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # DP training sees the same RNG
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("head."))
    changed = [
        k for k in after if k.startswith("features.") and not torch.equal(before[k], after[k])
    ]
    assert bool(changed) == (res.record["feature_parameters"] > 0)
    assert bool(res.warnings) == (model == "softmax")
    assert 0 <= res.metrics["pretrain_rotation_accuracy"] <= 1


def test_rotation_pretraining_on_real_digits_beats_chance():
    from privtool.models import build_model
    from privtool.pretrain import pretrain
    from privtool.stages.common import load_data_and_splits

    p = _params("pretrain.epochs=3")
    data, splits = load_data_and_splits(p.data)  # mnist-5k; public split: 500 real digits
    torch.manual_seed(0)
    net = build_model("lenet", data.shape, data.n_classes)
    res = pretrain(p, net, data, splits, device=torch.device("cpu"))
    # chance is 0.25; held-out digits, labels never used
    assert res.metrics["pretrain_rotation_accuracy"] > 0.6, res.metrics
    assert res.metrics["pretrain_source"] == "mnist-5k:public"


@pytest.mark.parametrize(
    "mech, extra",
    [
        ("gaussian", ["--epsilon", "3"]),
        pytest.param("vmf", ["--set", "train.epsilon_v=500000"], marks=pytest.mark.slow),
        pytest.param("none", [], marks=pytest.mark.slow),
        pytest.param("class", ["--epsilon", "8"], marks=pytest.mark.slow),
    ],
)
def test_cli_pretrain_rotation_with_each_mechanism(tmp_path, mech, extra):
    out = tmp_path / "run"
    res = invoke(
        "train",
        *FAST,
        "--mech",
        mech,
        *extra,
        "--epochs",
        "2",
        "--pretrain",
        "rotation",
        "--set",
        "pretrain.epochs=2",
        "--out",
        str(out),
        "--json",
    )
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["pretrain_source"] == "digits:public" and m["pretrain_rotation_accuracy"] > 0.25
    pre = load_run(out)["meta"]["inputs"]["pretrain"]
    assert pre["method"] == "rotation" and pre["split"] == "public" and not pre["labels_used"]
    if mech == "gaussian":
        assert 2.9 < m["epsilon"] <= 3.0  # pre-training spends no ε: the target is met as is


def test_cli_unknown_pretrain_method_is_a_usage_error(tmp_path):
    res = invoke("train", *FAST, "--pretrain", "jigsaw", "--out", str(tmp_path / "x"))
    assert res.exit_code == 2 and "jigsaw" in res.output and not (tmp_path / "x").exists()
    res = invoke("train", *FAST, "--set", "pretrain.method=jigsaw", "--out", str(tmp_path / "x"))
    assert res.exit_code == 1 and "pretrain.method='jigsaw'" in res.output


@pytest.mark.slow
def test_dp_model_from_rotation_pretraining_is_at_least_as_accurate(tmp_path):
    """Gaussian DP-SGD at ε = 3 on mnist-5k with paper 2's model (the TF Privacy tutorial CNN),
    pre-trained on the 500 digits of the public split; mean test accuracy over 3 seeds."""
    from privtool.stages import train as stage

    acc: dict[str, list[float]] = {"scratch": [], "rotation": []}
    eps: dict[str, list[float]] = {"scratch": [], "rotation": []}
    for seed in (0, 1, 2):
        for mode in acc:
            sets = [
                "train.device=cpu",
                "train.model=tfp-cnn",
                "train.mech=gaussian",
                "train.epsilon=3",
                f"train.seed={seed}",
                "train.checkpoint_every=0",
                "train.noise_seed=from-seed",
            ]  # the same noise for both: the comparison is paired
            if mode == "rotation":
                sets.append("pretrain.method=rotation")
            m = stage.run(load_params(None, sets), tmp_path / f"{mode}-{seed}")
            acc[mode].append(m["test_accuracy"])
            eps[mode].append(m["epsilon"])
    assert eps["scratch"] == eps["rotation"]  # same ε: pre-training is free
    assert np.mean(acc["rotation"]) >= np.mean(acc["scratch"]), acc
