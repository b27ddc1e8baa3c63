"""train.distributed=ddp: two gloo processes on CPU train the model one process would.

The two-process side runs in ``torch.multiprocessing.spawn`` workers (one spawn for every check,
results through a file); the one-process reference runs in the test process with the plain
mechanism, and the noise statistics are compared with closed forms (σC/B; A_d(κ) from scipy).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from privtool.config import TrainConfig
from privtool.errors import PrivtoolError
from privtool.mechanisms import MECHANISMS, Schedule

WORLD = 2
# noise-free runs whose weights must match one process: (mech, extra TrainConfig fields)
NOISE_FREE = {"gaussian": {"noise_multiplier": 0.0}, "class": {"noise_multiplier": 0.0}, "none": {}}
GAUSS = {
    "n": 64,
    "batch": 32,
    "sigma": 1.5,
    "clip": 0.1,
    "d_in": 100,
    "d_out": 100,
}  # 10,100 noise coords
VMF = {"b": 8, "d_in": 50, "classes": 10, "steps": 12}  # d = 510 parameters, one VMF part


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digits(n_train: int = 300, n_test: int = 60):
    from privtool.data import load_dataset

    d = load_dataset("digits")
    x, y = torch.from_numpy(d.x), torch.from_numpy(d.y)
    return d, x[:n_train], y[:n_train], x[n_train : n_train + n_test], y[n_train : n_train + n_test]


def _train_digits(mech: str, distributed: str, **fields):
    from privtool.models import build_model
    from privtool.training import seed_everything, train_model

    d, xtr, ytr, xte, yte = _digits()
    cfg = TrainConfig(
        mech=mech,
        model="lenet",
        epochs=1,
        batch_size=64,
        lr=0.5,
        device="cpu",
        distributed=distributed,
        noise_seed="from-seed",
        **fields,
    )
    seed_everything(0)
    model = build_model("lenet", d.shape, d.n_classes)
    out = train_model(cfg, model, xtr, ytr, xte, yte, device=torch.device("cpu"))
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        out.mechanism.accountant_state(out.metrics["steps"]),
    )


def _gauss_updates(stepper_for) -> torch.Tensor:
    """Update(σ) − update(0) of one SGD(lr=1) step from the same weights on the same batch:
    the released Gaussian noise divided by B (per coordinate)."""
    g = GAUSS
    torch.manual_seed(1)
    x, y = torch.randn(g["n"], g["d_in"]), torch.randint(0, g["d_out"], (g["n"],))
    init = nn.Linear(g["d_in"], g["d_out"]).state_dict()
    after = []
    for sigma in (g["sigma"], 0.0):
        model = nn.Linear(g["d_in"], g["d_out"])
        model.load_state_dict(init)
        cfg = TrainConfig(
            mech="gaussian", batch_size=g["batch"], noise_multiplier=sigma, max_grad_norm=g["clip"]
        )
        step, idx = stepper_for(cfg, model, g["n"])
        step(x[idx], y[idx])
        after.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return after[0] - after[1]


def _vmf_stats(stepper_for, kappa: float) -> tuple[float, float, int]:
    """Mean over steps of g·μ and |g|² for the VMF update g of b identical records (so every
    per-sample direction is μ), each step from the same weights; and the dimension d."""
    v = VMF
    torch.manual_seed(2)
    x = torch.randn(1, v["d_in"]).repeat(v["b"], 1)
    y = torch.zeros(v["b"], dtype=torch.long)
    model = nn.Linear(v["d_in"], v["classes"])
    init = {k: t.clone() for k, t in model.state_dict().items()}
    nn.functional.cross_entropy(model(x[:1]), y[:1]).backward()
    mu = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    mu = mu / mu.norm()
    model.zero_grad()
    cfg = TrainConfig(mech="vmf", batch_size=v["b"], kappa=kappa, epsilon_v=None)
    step, idx = stepper_for(cfg, model, v["b"])
    dots, sq = [], []
    for _ in range(v["steps"]):
        model.load_state_dict(init)
        step(x[idx], y[idx])
        g = torch.cat(
            [
                (init[k] - p.detach()).reshape(-1)  # lr = 1: the released gradient
                for k, p in zip(("weight", "bias"), model.parameters())
            ]
        )
        dots.append(float(g @ mu))
        sq.append(float(g @ g))
    return float(np.mean(dots)), float(np.mean(sq)), int(mu.numel())


def _one_process_stepper(cfg, model, n):
    mech = MECHANISMS.get(cfg.mech)(cfg, Schedule(n=n, batch_size=cfg.batch_size, epochs=1))
    mech.calibrate(model)
    gen = torch.Generator()
    gen.manual_seed(7)
    step = mech.make_stepper(model, torch.optim.SGD(model.parameters(), lr=1.0), gen)
    return step, np.arange(cfg.batch_size)


def _ddp_stepper(cfg, model, n):
    from privtool.distributed import DistributedMechanism, Session

    s = Session(rank=torch.distributed.get_rank(), world=WORLD, active=True)
    mech = MECHANISMS.get(cfg.mech)(cfg, Schedule(n=n, batch_size=cfg.batch_size, epochs=1))
    dm = DistributedMechanism(mech, s)
    dm.calibrate(model)
    gen = torch.Generator()
    gen.manual_seed(7)  # the same seed on both ranks: the rank > 0 stream must still differ
    step = dm.make_stepper(model, torch.optim.SGD(model.parameters(), lr=1.0), gen)
    return step, dm._adapter.shard(mech, np.arange(cfg.batch_size), s)


def _secret_batches_are_shared() -> list[bool]:
    """Each rank starts from its own secret sampling generator (train.noise_seed=secret); per
    step, the ranks' shares must still be disjoint and make up one batch of b records."""
    from privtool.distributed import DistributedMechanism, Session
    from privtool.release import secret_numpy_rng

    s = Session(rank=torch.distributed.get_rank(), world=WORLD, active=True)
    cfg = TrainConfig(mech="vmf", batch_size=64, kappa=1.0, epsilon_v=None)
    dm = DistributedMechanism(
        MECHANISMS.get("vmf")(cfg, Schedule(n=300, batch_size=64, epochs=1)), s
    )
    ok = []
    for share in dm.batches(1, secret_numpy_rng()):
        shares: list = [None] * WORLD
        torch.distributed.all_gather_object(shares, share.tolist())
        union = [i for sh in shares for i in sh]
        ok.append(len(union) == 64 and len(set(union)) == 64)
    return ok


def _worker(rank: int, port: int, result: str, kappa: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        out = {f"weights/{m}": _train_digits(m, "ddp", **f) for m, f in NOISE_FREE.items()}
        out["accountant/vmf"] = _train_digits("vmf", "ddp", epsilon=3.0)[1]
        out["gauss"] = _gauss_updates(_ddp_stepper)
        out["vmf"] = _vmf_stats(_ddp_stepper, kappa)
        out["secret_batches"] = _secret_batches_are_shared()
        if rank == 0:
            torch.save(out, result)
    finally:
        torch.distributed.destroy_process_group()


def _mean_resultant(kappa: float, d: int) -> float:
    """A_d(κ) = I_{d/2}(κ) / I_{d/2-1}(κ): E[v·μ] for v ~ VMF(κ, μ) on S^{d-1}."""
    from scipy.special import ive

    return float(ive(d / 2, kappa) / ive(d / 2 - 1, kappa))


@pytest.fixture(scope="module")
def two_process(tmp_path_factory):
    d = VMF["d_in"] * VMF["classes"] + VMF["classes"]
    kappa = 300.0  # A_d(κ) ≈ 0.46 at d = 510: noise and signal both visible
    path = str(tmp_path_factory.mktemp("ddp") / "rank0.pt")
    torch.multiprocessing.spawn(_worker, args=(_free_port(), path, kappa), nprocs=WORLD)
    return torch.load(path, weights_only=False), kappa, d


@pytest.mark.slow
@pytest.mark.parametrize("mech", sorted(NOISE_FREE))
def test_noise_free_weights_match_one_process(two_process, mech):
    """One epoch of the same batches: the 2-process weights are the 1-process weights."""
    ddp_state, ddp_acc = two_process[0][f"weights/{mech}"]
    one_state, one_acc = _train_digits(mech, "none", **NOISE_FREE[mech])
    moved = max(float((one_state[k] - _init_lenet()[k]).abs().max()) for k in one_state)
    assert moved > 1e-3  # training did change the weights
    for k in one_state:
        torch.testing.assert_close(ddp_state[k], one_state[k], atol=2e-6, rtol=1e-5)
    assert ddp_acc == one_acc


def _init_lenet():
    from privtool.models import build_model
    from privtool.training import seed_everything

    seed_everything(0)
    return build_model("lenet", _digits()[0].shape, 10).state_dict()


@pytest.mark.slow
def test_vmf_accountant_equals_one_process(two_process):
    ddp_acc = two_process[0]["accountant/vmf"]
    one_acc = _train_digits("vmf", "none", epsilon=3.0)[1]
    assert ddp_acc == one_acc
    assert ddp_acc["epsilon"] == pytest.approx(3.0, rel=0.05)


@pytest.mark.slow
def test_gaussian_noise_std_matches(two_process):
    """The update's noise has std σC/B per coordinate (added once, not once per rank)."""
    g = GAUSS
    want = g["sigma"] * g["clip"] / g["batch"]
    rel = 5 / np.sqrt(2 * g["d_in"] * g["d_out"])  # 5 standard errors of a sample std
    for noise in (two_process[0]["gauss"], _gauss_updates(_one_process_stepper)):
        assert float(noise.std()) == pytest.approx(want, rel=rel)
        assert abs(float(noise.mean())) < 5 * want / np.sqrt(noise.numel())


@pytest.mark.slow
def test_vmf_mean_resultant_length_matches(two_process):
    """b identical records: E[g·μ] = A_d(κ) and E|g|² = A² + (1−A²)/b when the b VMF samples
    are independent (ranks sharing a noise stream would double the second term)."""
    stats, kappa, d = two_process
    a = _mean_resultant(kappa, d)
    b = VMF["b"]
    for dot, sq, dim in (stats["vmf"], _vmf_stats(_one_process_stepper, kappa)):
        assert dim == d
        assert dot == pytest.approx(a, rel=0.02)
        assert sq == pytest.approx(a * a + (1 - a * a) / b, rel=0.03)


@pytest.mark.slow
def test_secret_sampling_is_one_global_batch(two_process):
    ok = two_process[0]["secret_batches"]
    assert len(ok) == 5 and all(ok)  # 300 / 64 → 5 steps, each one batch of 64 split in two


def test_ddp_outside_torchrun_is_one_clear_error(monkeypatch):
    from privtool.distributed import ddp_session

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(PrivtoolError, match="torchrun"), ddp_session("ddp", torch.device("cpu")):
        pass
    with pytest.raises(PrivtoolError, match="train.distributed"):
        TrainConfig(distributed="mpi")


def _env(rank: int, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(WORLD),
        "LOCAL_WORLD_SIZE": str(WORLD),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
        "PRIVTOOL_DDP_TIMEOUT": "60",
    }


@pytest.mark.slow
def test_killed_rank_ends_run_with_clear_error(tmp_path):
    """SIGKILL rank 1 mid-training: rank 0 exits 1 with one line, and no run is written."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "privtool",
        "train",
        "--mech",
        "gaussian",
        "--dataset",
        "digits",
        "--model",
        "lenet",
        "--epochs",
        "40",
        "--set",
        "train.distributed=ddp",
        "--set",
        "train.device=cpu",
        "--set",
        "train.checkpoint_every=0",
        "--out",
        str(out),
    ]
    port = _free_port()
    procs = [
        subprocess.Popen(
            cmd, env=_env(r, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for r in range(WORLD)
    ]
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob(".run.*.partial")):  # rank 0 is in training
            assert procs[0].poll() is None, procs[0].communicate()[1]
            assert time.time() < deadline
            time.sleep(0.2)
        time.sleep(1.0)
        procs[1].send_signal(signal.SIGKILL)
        _, stderr = procs[0].communicate(timeout=90)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 1, stderr
    assert "another rank died" in stderr and "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.glob(".run.*"))


@pytest.mark.slow
def test_ranks_with_different_params_fail_clearly(tmp_path):
    """Rank 1 given another learning rate: both ranks stop before training, one line each."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "privtool",
        "train",
        "--mech",
        "gaussian",
        "--dataset",
        "digits",
        "--set",
        "train.distributed=ddp",
        "--set",
        "train.device=cpu",
        "--out",
        str(out),
    ]
    port = _free_port()
    procs = [
        subprocess.Popen(
            cmd + ["--set", f"train.lr={0.5 + r}"],
            env=_env(r, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(WORLD)
    ]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    for p, e in zip(procs, errs):
        assert p.returncode == 1, e
        assert "rank(s) [1] see a different config" in e and "Traceback" not in e
    assert not out.exists() and not list(tmp_path.glob(".run.*"))


@pytest.mark.slow
def test_torchrun_cli_run_has_one_process_epsilon(tmp_path):
    """The issue's command under torchrun: one run directory whose accountant.json equals the
    one-process run's."""
    import json

    common = [
        "--mech",
        "gaussian",
        "--epsilon",
        "3",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--set",
        "train.device=cpu",
        "--set",
        "train.checkpoint_every=0",
    ]
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(WORLD),
            "--master_port",
            str(_free_port()),
            "-m",
            "privtool",
            "train",
            *common,
            "--set",
            "train.distributed=ddp",
            "--out",
            str(tmp_path / "ddp"),
            "--json",
        ],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.count('"epsilon"') >= 1 and ddp.stdout.strip().count("\n") == 0
    one = subprocess.run(
        [sys.executable, "-m", "privtool", "train", *common, "--out", str(tmp_path / "one")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    a, b = ((tmp_path / r / "accountant.json").read_text() for r in ("ddp", "one"))
    assert json.loads(a) == json.loads(b)
    assert json.loads((tmp_path / "ddp" / "meta.json").read_text())["processes"] == WORLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "one"]
