"""Small run and attack directories for the calibrate/report tests, in the real stages' format.

Templates in tests/fixtures/calibrate/ are meta.json/metrics.json (and per-target CSVs) copied
from real `privtool train`, `attack` and `select` outputs. The builders change only the
numbers a test needs, then write the directory the way `stages.common.finish_run` does
(payload hashes in meta.json, the target's meta hash in inputs.target); membership metrics
and plots/roc.csv come from the real scorer (`attacks.audit`) on synthetic scores.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from privtool.artifacts import dumps, file_hash

FIX = Path(__file__).parent / "fixtures" / "calibrate"
_clock = [0]


def template(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        json.loads((FIX / f"{name}.meta.json").read_text()),
        json.loads((FIX / f"{name}.metrics.json").read_text()),
    )


def _created() -> str:
    _clock[0] += 1
    return f"2026-01-01T00:{_clock[0] // 60:02d}:{_clock[0] % 60:02d}+0000"


def write_stage(
    out: Path, meta: dict[str, Any], metrics: dict[str, Any], files: dict[str, Any]
) -> Path:
    """Payload files (bytes, or CSV rows written by the stages' own ``write_csv``),
    metrics.json and meta.json (outputs hashed) as ``finish_run`` writes them."""
    from privtool.stages.common import write_csv

    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            (out / name).write_bytes(data)
        else:
            write_csv(out / name, data)
    (out / "metrics.json").write_text(dumps(metrics))
    meta = {
        **meta,
        "created": _created(),
        "outputs": {name: file_hash(out / name) for name in sorted([*files, "metrics.json"])},
    }
    (out / "meta.json").write_text(dumps(meta))
    return out


def make_train(
    root: Path,
    name: str,
    *,
    mech: str = "gaussian",
    epsilon: float | None = 1.0,
    test_accuracy: float = 0.8,
    model: str = "lenet",
    dataset: str = "mnist-5k",
) -> Path:
    """A train run; ``epsilon`` is the ε target (gaussian) or ε_V (vmf)."""
    meta, m = template({"gaussian": "train-gaussian", "vmf": "train-vmf"}.get(mech, "train-none"))
    meta, m = copy.deepcopy(meta), copy.deepcopy(m)
    meta["params"]["train"].update(mech=mech, model=model)
    meta["params"]["data"]["dataset"] = dataset
    meta["inputs"]["data"]["dataset"] = dataset
    m.update(
        mechanism=mech,
        model=model,
        dataset=dataset,
        test_accuracy=test_accuracy,
        train_gap=m["train_accuracy"] - test_accuracy,
    )
    if mech == "gaussian":
        meta["params"]["train"]["epsilon"] = epsilon
        m["epsilon"] = epsilon * 0.9997
    elif mech == "vmf":
        meta["params"]["train"].update(epsilon=None, epsilon_v=epsilon)
        m.update(epsilon_v_nominal=epsilon, epsilon_step=epsilon, epsilon=96 * epsilon)
    return write_stage(root / name, meta, m, {})


def _png(seed: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, np.random.default_rng(seed).random((12, 40)), cmap="gray", format="png")
    return buf.getvalue()


def _target_fields(run: Path, epoch: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    m = json.loads((run / "metrics.json").read_text())
    keep = (
        "mechanism",
        "dataset",
        "model",
        "test_accuracy",
        "train_accuracy",
        "noise_multiplier",
        "kappa",
        "parts",
        "partition",
        "delta",
    )
    t = {f"target_{k}": m[k] for k in keep if k in m}
    t.update({f"target_{k}": v for k, v in m.items() if k.startswith("epsilon")})
    t["target_epoch"] = epoch
    return t, {"dir": str(run), "epoch": epoch, "meta_sha256": file_hash(run / "meta.json")}


def make_attack(
    root: Path,
    attack: str,
    target: Path,
    *,
    epoch: int | None = None,
    signal: float = 0.0,
    ssim: float = 0.1,
    mse: float = 0.2,
    mia_distance: float = 6.0,
    seed: int = 0,
    n: int = 400,
) -> Path:
    """An attack dir on ``target``: membership attacks score N(signal, 1) members against
    N(0, 1) non-members with the real scorer; iga/inversion rescale the real per-image CSV."""
    from privtool.attacks.audit import roc_rows, score_attack

    name = {"reference": "attack-reference", "lira": "attack-reference"}.get(
        attack, f"attack-{attack}"
    )
    if attack not in ("loss", "reference", "lira", "iga", "inversion"):
        raise ValueError(attack)
    meta, m = (copy.deepcopy(x) for x in template(name))
    t, link = _target_fields(target, epoch)
    m = {k: v for k, v in m.items() if not k.startswith("target_")}
    m.update(t, attack=attack)
    meta["params"]["attack"]["name"] = attack
    meta["inputs"] = {"target": link}
    files: dict[str, Any] = {}
    if m["kind"] == "membership":
        rng = np.random.default_rng(seed)
        scores = np.r_[rng.normal(signal, 1, n), rng.normal(0, 1, n)]
        member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
        scored, roc = score_attack(scores, member, confidence=0.95, delta=1e-5)
        m.update(scored)
        files["plots/roc.csv"] = roc_rows(roc)
    elif m["kind"] == "reconstruction":
        rows = list(csv.DictReader(io.StringIO((FIX / "attack-iga.per_target.csv").read_text())))
        scale = mse / float(np.median([float(r["mse"]) for r in rows]))
        for r in rows:
            r["mse"] = float(r["mse"]) * scale
        m.update(mse=mse, ssim=ssim, mse_mean=float(np.mean([r["mse"] for r in rows])))
        files["per_target.csv"] = rows
        files["grid.png"] = _png(seed)
    else:
        rows = list(
            csv.DictReader(io.StringIO((FIX / "attack-inversion.per_class.csv").read_text()))
        )
        shift = mia_distance - float(np.mean([float(r["mia_distance"]) for r in rows]))
        for r in rows:
            r["mia_distance"] = float(r["mia_distance"]) + shift
        m["mia_distance"] = mia_distance
        files["per_class.csv"] = rows
        files["grid.png"] = _png(seed)
    label = target.name + (f"@{epoch}" if epoch is not None else "")
    return write_stage(root / attack / f"x-{label}-{seed}", meta, m, files)


def make_select(
    root: Path, name: str, parent: Path, *, strategy: str = "random", test_accuracy: float = 0.81
) -> Path:
    meta, m = (copy.deepcopy(x) for x in template("select"))
    pm = json.loads((parent / "metrics.json").read_text())
    meta["inputs"]["parent"].update(
        run=str(parent), spec=str(parent), meta_sha256=file_hash(parent / "meta.json")
    )
    meta["params"]["select"]["strategy"] = strategy
    m.update(
        strategy=strategy,
        test_accuracy=test_accuracy,
        mechanism=pm["mechanism"],
        parent=str(parent),
        epsilon=pm.get("epsilon"),
        parent_epsilon=pm.get("epsilon"),
        accuracy_gain=test_accuracy - pm["test_accuracy"],
        parent_test_accuracy=pm["test_accuracy"],
    )
    return write_stage(root / name, meta, m, {})


def auc_signal(auc: float) -> float:
    """The N(μ, 1) vs N(0, 1) shift whose AUC is ``auc`` (AUC = Φ(μ/√2))."""
    from scipy.stats import norm

    return math.sqrt(2) * float(norm.ppf(auc))


def standard_runs(root: Path) -> dict[str, Path]:
    """Gaussian ε 1, 2, 8, 50 and VMF ε_V 1, 50 (LeNet), a non-private run and an MLP pair;
    loss on all, iga on some, inversion on two, loss on a checkpoint, one select run. Attack
    folders are named x-*, so only meta.json links them to their runs."""
    train, att = root / "train", root / "attack"
    runs: dict[str, Path] = {}
    for eps, acc, auc in ((1, 0.78, 0.50), (2, 0.82, 0.52), (8, 0.86, 0.56), (50, 0.88, 0.60)):
        runs[f"g{eps}"] = make_train(train, f"g{eps}", epsilon=eps, test_accuracy=acc)
        make_attack(att, "loss", runs[f"g{eps}"], signal=auc_signal(auc), seed=eps)
    for eps, acc, auc in ((1, 0.81, 0.51), (50, 0.87, 0.53)):
        runs[f"v{eps}"] = make_train(train, f"v{eps}", mech="vmf", epsilon=eps, test_accuracy=acc)
        make_attack(att, "loss", runs[f"v{eps}"], signal=auc_signal(auc), seed=100 + eps)
    runs["none"] = make_train(train, "none", mech="none", epsilon=None, test_accuracy=0.9)
    make_attack(att, "loss", runs["none"], signal=auc_signal(0.7), seed=7)
    for key, mse, ssim in (
        ("g1", 0.30, 0.01),
        ("g50", 0.10, 0.2),
        ("v1", 0.35, 0.0),
        ("v50", 0.25, 0.05),
        ("none", 0.01, 0.8),
    ):
        make_attack(att, "iga", runs[key], mse=mse, ssim=ssim)
    make_attack(att, "inversion", runs["g1"], mia_distance=6.5)
    make_attack(att, "inversion", runs["none"], mia_distance=5.0)
    make_attack(att, "loss", runs["g8"], epoch=2, signal=auc_signal(0.53), seed=82)
    runs["mlp-g1"] = make_train(train, "mlp-g1", epsilon=1, test_accuracy=0.6, model="mlp")
    runs["sel"] = make_select(root / "select", "random-g1", runs["g1"])
    return runs
