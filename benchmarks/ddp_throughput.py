"""Training throughput (examples/s) of one process vs N gloo processes (train.distributed=ddp).

    python benchmarks/ddp_throughput.py [--mech gaussian vmf] [--batch 256] [--steps 20]
                                        [--procs 2] [--threads 1]

LeNet on `mnist-5k`, fixed global batches of B examples (the same for every configuration, so
all do equal work); each process runs ``--threads`` torch threads. One process runs the plain
mechanism stepper; N processes run the privtool.distributed stepper, each on its share B/N of
every batch, with the gradient all-reduce. Prints examples/s and the ratio N-proc / 1-proc
(ideal: N, on N free cores).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
import warnings

import numpy as np
import torch

from privtool.config import TrainConfig
from privtool.mechanisms import MECHANISMS, Schedule
from privtool.models import build_model


def _batches(batch: int, steps: int):
    from privtool.data import load_dataset

    d = load_dataset("mnist-5k")
    rng = np.random.default_rng(0)
    idx = [np.sort(rng.choice(len(d.y), batch, replace=False)) for _ in range(steps)]
    return d, torch.from_numpy(d.x), torch.from_numpy(d.y), idx


def _cfg(mech: str, batch: int) -> TrainConfig:
    return TrainConfig(
        mech=mech,
        batch_size=batch,
        noise_multiplier=1.0,
        kappa=1000.0,
        epsilon_v=None,
        device="cpu",
    )


def _run(mech: str, batch: int, steps: int, threads: int, rank: int, world: int) -> float:
    """Seconds for ``steps`` steps (after 3 warm-up steps) on this rank."""
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    d, x, y, idx = _batches(batch, steps + 3)
    torch.manual_seed(0)
    model = build_model("lenet", d.shape, d.n_classes)
    cfg = _cfg(mech, batch)
    mech_obj = MECHANISMS.get(mech)(cfg, Schedule(n=len(y), batch_size=batch, epochs=1))
    if world > 1:
        from privtool.distributed import DistributedMechanism, Session

        session = Session(rank=rank, world=world, active=True)
        mech_obj = DistributedMechanism(mech_obj, session)
        share = [i[rank::world] for i in idx]
    else:
        share = idx
    mech_obj.calibrate(model)
    gen = torch.Generator()
    gen.manual_seed(1)
    step = mech_obj.make_stepper(model, torch.optim.SGD(model.parameters(), lr=0.1), gen)
    t0 = 0.0
    for k, i in enumerate(share):
        if k == 3:
            if world > 1:
                torch.distributed.barrier()
            t0 = time.perf_counter()
        it = torch.from_numpy(i)
        step(x.index_select(0, it), y.index_select(0, it))
    return time.perf_counter() - t0


def _worker(
    rank: int, world: int, port: int, args: argparse.Namespace, mech: str, out: str
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        secs = _run(mech, args.batch, args.steps, args.threads, rank, world)
        t = torch.tensor([secs])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        if rank == 0:
            with open(out, "w") as f:
                f.write(str(float(t)))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mech", nargs="+", default=["gaussian", "vmf"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(
        f"LeNet, mnist-5k, global batch {args.batch}, {args.steps} timed steps, "
        f"{args.threads} thread(s)/process, {os.cpu_count()} CPUs visible"
    )
    for mech in args.mech:
        one = args.batch * args.steps / _run(mech, args.batch, args.steps, args.threads, 0, 1)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "secs")
            torch.multiprocessing.spawn(
                _worker, nprocs=args.procs, args=(args.procs, _free_port(), args, mech, out)
            )
            with open(out) as f:
                many = args.batch * args.steps / float(f.read())
        print(
            f"{mech:9s} 1 process: {one:8.1f} ex/s   {args.procs} processes (ddp): "
            f"{many:8.1f} ex/s   ratio {many / one:.2f}"
        )


if __name__ == "__main__":
    main()
