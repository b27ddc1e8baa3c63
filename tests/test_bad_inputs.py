"""Issue 17 items 9, 10 and 13: every bad input over every command is one clear line.

Each case: exit code 1, one line of output naming the problem (the key, the bad value and
what is allowed for a setting), no traceback, and nothing new in ``--out`` or beside it.
Flags, ``--set`` overrides and params files all go through one validation path
(:mod:`privtool.schema`), so each kind of value is tried through each door.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privtool.cli import app

runner = CliRunner()


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def world(tmp_path_factory, digits_run):
    """A trained run (a copy of conftest's shared non-private digits run), a folder of runs,
    a file, an attack-like folder and params files."""
    top = tmp_path_factory.mktemp("world")
    run = top / "runs" / "train" / "none"
    digits_run("--mech", "none", into=run)
    (top / "afile").write_text("not a folder\n")
    attack_like = top / "attackdir"
    attack_like.mkdir()
    (attack_like / "meta.json").write_text(json.dumps({"stage": "attack", "outputs": {}}))
    files = {
        "p_epochs_abc.yaml": "train:\n  epochs: abc\n",
        "p_list_section.yaml": "train: [1, 2]\n",
        "p_bad_section.yaml": "bogus:\n  x: 1\n",
        "p_seed_float.yaml": "train:\n  seed: 1.5\n",
        "p_delta_str_bad.yaml": "attack:\n  delta: 1e-5x\n",
        "p_not_mapping.yaml": "- a\n- b\n",
        "p_bad_yaml.yaml": "train: [unclosed\n",
        "p_iga_lr.yaml": "attack:\n  iga:\n    lr: fast\n",
    }
    for name, text in files.items():
        (top / name).write_text(text)
    return {
        "R": str(run),
        "RUNS": str(top / "runs"),
        "FILE": str(top / "afile"),
        "ATTACKDIR": str(attack_like),
        "TOP": top,
        **{k.split(".")[0]: str(top / k) for k in files},
    }


T = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1"]
E = ["epsilon", "--mech", "gaussian", "--noise-multiplier", "1", "--sample-rate", "0.1"]
A = ["attack", "--attack", "loss", "--target", "{R}"]
S = ["select", "--strategy", "random", "--target", "{R}"]
C = ["calibrate", "--runs", "{RUNS}"]

CASES = [
    # ---- train: seeds, types before ranges, booleans are not numbers, flags vs --set
    (T + ["--seed", "-1"], "train.seed=-1 is not allowed: an integer in [0, 4294967295]"),
    (T + ["--set", "train.seed=abc"], "train.seed='abc' is not allowed: an integer"),
    (T + ["--set", "train.seed=1.5"], "train.seed=1.5 is not allowed"),
    (T + ["--set", "data.split_seed=-1"], "data.split_seed=-1 is not allowed"),
    (T + ["--set", "train.epochs=true"], "train.epochs=True is not allowed: an integer >= 1"),
    (T + ["--set", "train.epochs=abc", "--epochs", "1"], "train.epochs='abc' is not allowed"),
    (T + ["--set", "train.epochs=abc", "--set", "train.epochs=2"], "train.epochs='abc'"),
    (T + ["--epochs", "0"], "train.epochs=0 is not allowed: an integer >= 1"),
    (T + ["--set", "train.lr=0"], "train.lr=0 is not allowed: a number > 0"),
    (T + ["--set", "train.lr=abc"], "train.lr='abc' is not allowed: a number > 0"),
    (T + ["--set", "train.lr=.inf"], "train.lr=inf is not allowed"),
    (T + ["--set", "train.momentum=1"], "train.momentum=1 is not allowed: a number in [0, 1)"),
    (T + ["--set", "train.delta=true"], "train.delta=True is not allowed: a number in (0, 1)"),
    (T + ["--set", "train.batch_size=0"], "train.batch_size=0"),
    (
        T + ["--set", "train.optimizer=rmsprop"],
        "train.optimizer='rmsprop' is not allowed: sgd or adam",
    ),
    (T + ["--device", "tpu"], "train.device='tpu' is not allowed: auto, cpu or cuda"),
    (T + ["--set", "train.accountant=gdp"], "train.accountant='gdp' is not allowed: rdp or prv"),
    (T + ["--set", "train.grad_sample_mode=x"], "train.grad_sample_mode='x'"),
    (T + ["--set", "train.epsilon_v=0"], "train.epsilon_v=0"),
    (T + ["--set", "train.unit_sample_rate=1.5"], "train.unit_sample_rate=1.5"),
    (
        T + ["--set", "train.unit_sampling=x"],
        "train.unit_sampling='x' is not allowed: poisson or fixed",
    ),
    (T + ["--set", "train.subclass_features=x"], "train.subclass_features='x'"),
    (T + ["--set", "train.checkpoint_every=-1"], "train.checkpoint_every=-1"),
    (T + ["--set", "train.k_sub=0"], "train.k_sub=0"),
    (T + ["--set", "train.eval_batch_size=true"], "train.eval_batch_size=True"),
    (T + ["--set", "train.noise_multiplier=-1"], "train.noise_multiplier=-1"),
    (T + ["--set", "train.max_grad_norm=0"], "train.max_grad_norm=0"),
    (T + ["--set", "train.kappa=abc", "--mech", "vmf"], "train.kappa='abc'"),
    (T + ["--epsilon", "-2"], "train.epsilon=-2.0 is not allowed"),
    (T + ["--set", "data.image_size=0"], "data.image_size=0"),
    (T + ["--set", "data.splits.train=0"], "data.splits.train=0 is not allowed"),
    (T + ["--set", "data.splits.train=true"], "data.splits.train=True is not allowed"),
    (T + ["--set", "data.splits=abc"], "data.splits='abc' is not allowed"),
    (T + ["--set", "data.splits.train=0.9"], "fractions summing to at most 1"),
    (
        T + ["--set", "pretrain.method=jigsaw"],
        "pretrain.method='jigsaw' is not allowed: rotation or null",
    ),
    (T + ["--set", "pretrain.holdout=1"], "pretrain.holdout=1"),
    (T + ["--set", "pretrain.epochs=0"], "pretrain.epochs=0"),
    (T + ["--set", "train=3"], "must look like section.key=value"),
    (T + ["--set", "nosection.x=1"], "unknown params section 'nosection'"),
    (T + ["--set", "train.epochz=1"], "unknown params key train.epochz"),
    (T + ["--mech", "laplace"], "unknown mechanism 'laplace'"),
    (T[:5] + ["--model", "resnet"], "unknown model 'resnet'"),
    (["train", "--dataset", "imagenet42"], "unknown dataset 'imagenet42'"),
    # ---- params files (YAML 1.1 strings, bad shapes), also when a flag overrides the key
    (T + ["--params", "{p_epochs_abc}"], "train.epochs='abc' is not allowed"),
    (T + ["--params", "{p_epochs_abc}", "--epochs", "2"], "train.epochs='abc' is not allowed"),
    (T + ["--params", "{p_seed_float}"], "train.seed=1.5 is not allowed"),
    (T + ["--params", "{p_list_section}"], "params section 'train' must be a mapping"),
    (T + ["--params", "{p_bad_section}"], "unknown params section 'bogus'"),
    (T + ["--params", "{p_not_mapping}"], "must be a mapping of sections"),
    (T + ["--params", "{p_bad_yaml}"], "is not valid YAML"),
    (T + ["--params", "{TOP}/absent.yaml"], "not found"),
    # ---- epsilon
    (
        E + ["--steps", "10", "--mech", "class", "--units", "0"],
        "units=0 is not allowed: an integer >= 1",
    ),
    (
        [
            "epsilon",
            "--mech",
            "gaussian",
            "--noise-multiplier",
            "-1",
            "--sample-rate",
            "0.1",
            "--steps",
            "10",
        ],
        "noise_multiplier=-1.0 is not allowed",
    ),
    (E + ["--steps", "-1"], "steps=-1 is not allowed"),
    (E + ["--epochs", "0"], "epochs=0.0 is not allowed"),
    (E + ["--steps", "10", "--delta", "0"], "delta=0.0 is not allowed: a number in (0, 1)"),
    (E + ["--steps", "10", "--delta", "1.5"], "delta=1.5 is not allowed"),
    (E + ["--steps", "10", "--accountant", "gdp"], "accountant='gdp' is not allowed: rdp or prv"),
    (
        [
            "epsilon",
            "--mech",
            "vmf",
            "--kappa",
            "1",
            "--sample-rate",
            "0.1",
            "--steps",
            "10",
            "--parts",
            "0",
        ],
        "parts=0 is not allowed",
    ),
    (E + ["--steps", "10", "--mech", "class", "--unit-sampling", "x"], "unit_sampling='x'"),
    (E + ["--steps", "10", "--mech", "subclass", "--k-sub", "0"], "k_sub=0 is not allowed"),
    (
        ["epsilon", "--mech", "gaussian", "--sample-rate", "0.1", "--steps", "10"],
        "--noise-multiplier is required",
    ),
    (E + ["--steps", "10", "--epochs", "1"], "either --steps or --epochs"),
    # ---- attack
    (A + ["--seed", "-1"], "attack.seed=-1 is not allowed"),
    (A + ["--set", "attack.seed=abc"], "attack.seed='abc' is not allowed"),
    (A + ["--set", "attack.delta=abc"], "attack.delta='abc' is not allowed: a number in (0, 1)"),
    (A + ["--set", "attack.confidence=abc"], "attack.confidence='abc' is not allowed"),
    (A + ["--set", "attack.n_targets=true"], "attack.n_targets=True is not allowed"),
    (A + ["--set", "attack.n_models=0"], "attack.n_models=0"),
    (A + ["--set", "attack.workers=-1"], "attack.workers=-1"),
    (A + ["--set", "attack.backend=dask"], "attack.backend='dask' is not allowed: local or ray"),
    (A + ["--set", "attack.loss.n_eval=0"], "attack.loss.n_eval=0 is not allowed"),
    (A + ["--set", "attack.iga.lr=abc"], "attack.iga.lr='abc' is not allowed"),
    (A + ["--params", "{p_iga_lr}"], "attack.iga.lr='fast' is not allowed"),
    (A + ["--params", "{p_delta_str_bad}"], "attack.delta='1e-5x' is not allowed"),
    (A + ["--set", "attack.bogus=1"], "unknown params key attack.bogus"),
    (A + ["--set", "attack.seed=abc", "--seed", "1"], "attack.seed='abc' is not allowed"),
    (
        ["attack", "--attack", "iga", "--target", "{R}", "--set", "attack.iga.restarts=0"],
        "attack.iga.restarts=0",
    ),
    (
        ["attack", "--attack", "iga", "--target", "{R}", "--set", "attack.iga.at=middle"],
        "attack.iga.at='middle' is not allowed: trained or init",
    ),
    (
        [
            "attack",
            "--attack",
            "inversion",
            "--target",
            "{R}",
            "--set",
            "attack.inversion.regularizer=tv2",
        ],
        "unknown attack.inversion.regularizer 'tv2'",
    ),
    (["attack", "--attack", "nosuch", "--target", "{R}"], "unknown attack 'nosuch'"),
    (["attack", "--attack", "loss", "--target", "{TOP}/nope"], "does not exist"),
    (["attack", "--attack", "loss", "--target", "{R}@99"], "no checkpoint at epoch 99"),
    (["attack", "--attack", "loss", "--target", "{FILE}"], "is a file, not a run folder"),
    (
        ["attack", "--attack", "loss", "--target", "{ATTACKDIR}"],
        "written by stage 'attack', not 'train'; pass a folder written by `privtool train`",
    ),
    # ---- store
    (["store", "--target", "{R}", "--role", "x"], "--role 'x' is not allowed"),
    (["store", "--target", "{R}", "--seed", "-1"], "attack.seed=-1 is not allowed"),
    # ---- select
    (S + ["--seed", "-1"], "select.seed=-1 is not allowed"),
    (S + ["--set", "select.seed=-1"], "select.seed=-1 is not allowed"),
    (S + ["--n-labeled", "0"], "select.n_labeled=0"),
    (S + ["--set", "select.k=0"], "select.k=0"),
    (
        S + ["--set", "select.uncertainty=x"],
        "select.uncertainty='x' is not allowed: entropy or margin",
    ),
    (S + ["--set", "select.near_private.epsilon_pca=0"], "select.near_private.epsilon_pca=0"),
    (S + ["--set", "select.finetune.lr=abc"], "select.finetune.lr='abc'"),
    (S + ["--set", "select.pollution.fraction=1"], "select.pollution.fraction=1"),
    (S + ["--epsilon-limit", "0"], "select.epsilon_limit=0.0 is not allowed"),
    (["select", "--strategy", "all", "--target", "{R}", "--seeds", "0"], "select.curve.seeds=0"),
    (["select", "--strategy", "bogus", "--target", "{R}"], "unknown"),
    # ---- calibrate
    (["calibrate", "--runs", "{TOP}/nope"], "does not exist"),
    (["calibrate", "--runs", "{FILE}"], "is a file, not a folder"),
    (
        C + ["--set", "calibrate.baseline=bogus"],
        "calibrate.baseline='bogus' is not allowed: class, gaussian",
    ),
    (C + ["--set", "calibrate.confidence=abc"], "calibrate.confidence='abc' is not allowed"),
    (C + ["--set", "calibrate.accuracy_tolerance=2"], "calibrate.accuracy_tolerance=2"),
    (C + ["--set", "calibrate.judged_by.membership=xyz"], "calibrate.judged_by.membership='xyz'"),
    (C + ["--set", "calibrate.bogus=1"], "unknown params key calibrate.bogus"),
    # ---- report
    (["report", "{TOP}/nope"], "does not exist"),
    (["report", "{FILE}"], "is a file, not a folder"),
    (
        ["report", "{RUNS}", "--set", "report.markdown=3"],
        "report.markdown=3 is not allowed: true or false",
    ),
    (["report", "{RUNS}", "--set", "report.title="], "report.title=None is not allowed"),
    # ---- data
    (["data", "verify", "bogus"], "unknown dataset 'bogus'"),
    (["data", "prepare", "mnist", "--root", "{FILE}/data"], "{FILE} is a file, not a folder"),
]


def _ids(case):
    return " ".join(case[0])[:70]


@pytest.mark.parametrize("args, match", CASES, ids=[_ids(c) for c in CASES])
def test_bad_input_is_one_line_exit_1_nothing_written(world, tmp_path, args, match):
    args = [a.format(**world) for a in args]
    match = match.format(**world)
    dest = tmp_path / "o"
    if args[0] in ("train", "attack", "select", "calibrate", "store"):
        args += ["--out", str(dest / "out")]
    elif args[0] == "report":
        args += ["--out", str(dest / "report.html")]
    before_world = snapshot(world["TOP"])
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    out = res.output.strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert match in out, out
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    assert snapshot(world["TOP"]) == before_world  # no lock, partial or file beside a run


def test_the_table_is_big_enough():
    assert len(CASES) >= 60
    assert {c[0][0] for c in CASES} >= {
        "train",
        "epsilon",
        "attack",
        "store",
        "select",
        "calibrate",
        "report",
        "data",
    }


def test_data_prepare_offline_leaves_no_root(tmp_path, monkeypatch):
    """A download that fails half-way (offline) leaves no empty data root behind, and keeps
    what was there before."""
    import privtool.data.registry as reg
    from privtool.errors import PrivtoolError

    def half_download(self, root):
        (root / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
        raise PrivtoolError("could not download mnist (offline)")

    monkeypatch.setattr(type(reg.DATASETS.get("mnist")), "fetch", half_download)
    root = tmp_path / "new" / "root"
    res = runner.invoke(app, ["data", "prepare", "mnist", "--root", str(root)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "old"
    (kept / "mine").mkdir(parents=True)
    res = runner.invoke(app, ["data", "prepare", "mnist", "--root", str(kept)])
    assert res.exit_code == 1
    assert snapshot(kept) == ["mine"]


# A wrong key in any params section, nested ones included, through the command that reads it.
WRONG_KEYS = [
    (T, "train.bogus"),
    (T, "data.bogus"),
    (T, "pretrain.bogus"),
    (S, "select.bogus"),
    (T, "select.near_private.bogus"),
    (T, "select.pollution.bogus"),
    (S, "select.finetune.bogus"),
    (S, "select.curve.bogus"),
    (A, "attack.bogus"),
    (A, "attack.loss.bogus"),
    (A, "attack.iga.bogus"),  # another attack's section is checked too
    (C, "calibrate.bogus"),
    (["report", "{RUNS}"], "report.bogus"),
    (["audit", "--target", "{R}"], "audit.bogus"),
]


def _valid_keys(section: str) -> list[str]:
    """The keys a section accepts: its settings class's fields (and, for ``attack``, every
    attack's name, which holds that attack's own section)."""
    import dataclasses

    from privtool import config
    from privtool.attacks.base import ATTACKS, AttackConfig
    from privtool.audit.run import AuditConfig
    from privtool.calibrate.settings import CalibrateConfig
    from privtool.report import ReportConfig

    classes = {
        "train": config.TrainConfig,
        "data": config.DataConfig,
        "pretrain": config.PretrainConfig,
        "select": config.SelectConfig,
        "select.near_private": config.NearPrivateConfig,
        "select.pollution": config.PollutionConfig,
        "select.finetune": config.FinetuneConfig,
        "select.curve": config.CurveConfig,
        "attack": AttackConfig,
        "calibrate": CalibrateConfig,
        "report": ReportConfig,
        "audit": AuditConfig,
    }
    if section.startswith("attack."):
        cls = ATTACKS.get(section.split(".", 1)[1]).Options
    else:
        cls = classes[section]
    keys = [f.name for f in dataclasses.fields(cls) if f.init]
    return keys + (ATTACKS.names() if section == "attack" else [])


@pytest.mark.parametrize("args, key", WRONG_KEYS, ids=[k for _, k in WRONG_KEYS])
def test_wrong_key_names_the_key_and_the_valid_ones(world, tmp_path, args, key):
    """Issue 18 Deliver 2: a typo in any params section is one line naming the key and
    listing every key that section accepts; never a TypeError from a constructor."""
    args = [a.format(**world) for a in args] + ["--set", f"{key}=1"]
    out_flag = str(tmp_path / ("report.html" if args[0] == "report" else "out"))
    res = runner.invoke(app, [*args, "--out", out_flag])
    out = res.output.strip()
    assert res.exit_code == 1, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert f"unknown params key {key};" in out, out
    listed = out.split(";", 1)[1]
    section = key.rsplit(".", 1)[0]
    missing = [k for k in _valid_keys(section) if not re.search(rf"\b{re.escape(k)}\b", listed)]
    assert not missing, (missing, out)
    assert list(tmp_path.iterdir()) == []


STAGES = {
    "train": ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--mech", "none"],
    "attack": ["attack", "--attack", "loss", "--target", "{R}"],
    "select": [
        "select",
        "--strategy",
        "random",
        "--target",
        "{R}",
        "--set",
        "select.finetune.epochs=1",
        "--n-labeled",
        "10",
    ],
    "calibrate": ["calibrate", "--runs", "{RUNS}"],
    "report": ["report", "{RUNS}"],
    "store": ["store", "--target", "{R}", "--set", "attack.n_models=2"],
}


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("where", ["{FILE}/out", "{FILE}/deeper/out"])
def test_out_under_a_file_is_one_line_in_every_stage(world, stage, where):
    """--out below a file: one line naming the file, exit 1, nothing written anywhere."""
    args = [a.format(**world) for a in STAGES[stage]]
    before = snapshot(world["TOP"])
    res = runner.invoke(app, [*args, "--out", where.format(**world)])
    out = res.output.strip()
    assert res.exit_code == 1, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert f"{world['FILE']} is a file, not a folder" in out, out
    assert snapshot(world["TOP"]) == before
