"""Benchmark: VMF sampling of B×d vs ``torch.randn`` of the same B×d (SPEC §9).

Exact VMF sampling needs one standard normal per coordinate, so ``torch.randn(B, d)`` is the
floor; the target is ``sample_vmf`` ≤ 1.5× ``randn`` (same shape, dtype, device), measured on the
project's 2-core CPU. The default d = 62006 is the figure the brief names as "LeNet on MNIST":
it is the parameter count of the classic LeNet-5 layout (conv 3→6 5×5: 456, conv 6→16 5×5:
2416, fc 400→120: 48120, fc 120→84: 10164, fc 84→10: 850; on 1×32×32 MNIST the same layout has
61706). privtool's own ``lenet`` (DLG-style, three 12-channel 5×5 convs) has 13426 parameters on
MNIST; pass ``--dim 13426`` for that. Either way it is one "whole"-partition VMF draw per
per-sample gradient of a batch of B = 256.

    python benchmarks/vmf_sampling.py --batch 256 --dim 62006 --dtype float32 --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from privtool.mechanisms.vmf_sampler import sample_vmf

LENET_MNIST_PARAMS = 62006


def _timer(device: torch.device):
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return sync


def interleaved_medians(fns: dict, *, repeats: int, warmup: int, sync) -> dict:
    """Median wall time of each function; the functions are timed round-robin, so that drifting
    machine load (a shared 2-core box) affects all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256, help="rows B (default 256)")
    ap.add_argument(
        "--dim",
        type=int,
        default=LENET_MNIST_PARAMS,
        help=f"dimension d (default {LENET_MNIST_PARAMS}, see the module doc)",
    )
    ap.add_argument(
        "--dtype", default="float32", choices=["float16", "bfloat16", "float32", "float64"]
    )
    ap.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--kappas",
        type=float,
        nargs="*",
        default=[1.0, 1e2, 1e4, 1e6],
        help="extra κ values to time (the main line uses the first one)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    sync = _timer(device)
    b, d = args.batch, args.dim
    gen = torch.Generator(device=device).manual_seed(args.seed)
    mu = torch.randn(b, d, dtype=torch.float64, device=device, generator=gen)
    mu = (mu / mu.norm(dim=1, keepdim=True)).to(dtype)

    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"B={b} d={d} dtype={args.dtype} repeats={args.repeats} (median)"
    )

    fns = {"randn": lambda: torch.randn(b, d, dtype=dtype, device=device, generator=gen)}
    for kappa in args.kappas:
        fns[kappa] = (lambda k: lambda: sample_vmf(mu, k, generator=gen))(kappa)
    med = interleaved_medians(fns, repeats=args.repeats, warmup=args.warmup, sync=sync)
    t_ref = med["randn"]
    kappa0 = args.kappas[0]
    print(f"torch.randn({b}, {d}):              {t_ref * 1e3:9.2f} ms")
    print(f"sample_vmf({b}, {d}), kappa={kappa0:<8g} {med[kappa0] * 1e3:9.2f} ms")
    print(f"ratio sample_vmf / randn = {med[kappa0] / t_ref:.3f}  (target <= 1.5)")
    print("per kappa:")
    for kappa in args.kappas:
        print(f"  kappa={kappa:<10g} {med[kappa] * 1e3:9.2f} ms  ratio {med[kappa] / t_ref:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
