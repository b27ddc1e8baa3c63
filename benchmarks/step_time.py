"""Step-time ratios of privtool's DP steps, measured in one run on one machine (SPEC §9).

    python benchmarks/step_time.py [--batch 256] [--device cpu|cuda] [--repeats 30]

Prints, for LeNet at batch 256 on offline `mnist` (the 15,000 real digits; falls back to
`mnist-5k` without a data root):
  * privtool Gaussian DP-SGD step / non-private step              (target <= 1.3)
  * privtool Gaussian step / fastest plain-Opacus make_private mode (target <= 1.1)
  * DirDP-SGD (vmf) step / (per-sample-gradient DP step + randn(B, d)) (target <= 1.2)
  * on CUDA: DirDP-SGD step / Gaussian step                        (target <= 1.5)
Every step sees the same fixed batches of exactly B examples, so all do equal work.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import replace

import torch
from torch import nn

from privtool.config import TrainConfig
from privtool.data import data_root, load_dataset
from privtool.errors import PrivtoolError
from privtool.mechanisms import MECHANISMS, Schedule
from privtool.models import build_model


def load(batch: int, device: torch.device):
    try:
        data = load_dataset("mnist", data_root(None))
    except PrivtoolError as e:
        print(f"note: {e}; using mnist-5k")
        data = load_dataset("mnist-5k")
    x = torch.from_numpy(data.x[: 8 * batch]).to(device)
    y = torch.from_numpy(data.y[: 8 * batch]).to(device)
    return data, [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(steps: dict, batches, device, repeats: int) -> dict:
    """Median seconds per step of each function, timed round-robin (one step of each per
    round) so that load from other processes hits every configuration alike."""
    for step in steps.values():
        for xb, yb in batches[:3]:
            step(xb, yb)
    times = {k: [] for k in steps}
    for i in range(repeats):
        xb, yb = batches[i % len(batches)]
        for k, step in steps.items():
            sync(device)
            t = time.perf_counter()
            step(xb, yb)
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def privtool_step(mech: str, cfg: TrainConfig, data, n: int, device):
    torch.manual_seed(0)
    model = build_model("lenet", data.shape, data.n_classes).to(device)
    m = MECHANISMS.get(mech)(
        replace(cfg, mech=mech), Schedule(n=n, batch_size=cfg.batch_size, epochs=1)
    )
    m.calibrate(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    return m.make_stepper(model, opt, gen), sum(p.numel() for p in model.parameters())


def opacus_step(mode: str, data, batches, device):
    """Plain Opacus: PrivacyEngine.make_private in ``mode``; one step on a given batch."""
    from opacus import PrivacyEngine

    torch.manual_seed(0)
    model = build_model("lenet", data.shape, data.n_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*[torch.cat(t) for t in zip(*batches)]),
        batch_size=len(batches[0][0]),
    )
    crit = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = PrivacyEngine().make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            grad_sample_mode=mode,
            poisson_sampling=False,
            criterion=crit,
        )
    model, opt = res[0], res[1]
    if mode == "ghost":
        crit = res[2]

    def step(xb, yb):
        opt.zero_grad()
        loss = crit(model(xb), yb)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--kappa", type=float, default=1e4)
    ap.add_argument(
        "--mode",
        default=TrainConfig().grad_sample_mode,
        help="privtool's grad_sample_mode for gaussian (default: privtool's default)",
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    data, batches = load(args.batch, device)
    n = 10 * args.batch
    cfg = TrainConfig(
        batch_size=args.batch,
        noise_multiplier=1.0,
        kappa=args.kappa,
        grad_sample_mode=args.mode,
        device=args.device,
    )
    print(
        f"privtool gaussian grad_sample_mode={args.mode}; LeNet on {data.name} {data.shape}, batch {args.batch}, device {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    steps = {}
    steps["non-private"], d = privtool_step("none", cfg, data, n, device)
    steps["privtool gaussian"], _ = privtool_step("gaussian", cfg, data, n, device)
    for mode in ("ghost", "hooks", "functorch"):
        steps[f"opacus {mode}"] = opacus_step(mode, data, batches, device)
    steps["privtool vmf (whole)"], _ = privtool_step("vmf", cfg, data, n, device)
    steps["randn(B, d)"] = lambda xb, yb: torch.randn(len(xb), d, device=device)
    t = time_interleaved(steps, batches, device, args.repeats)

    for k, v in t.items():
        print(f"  {k:<28} {v * 1e3:8.2f} ms/step")
    fastest = min(("ghost", "hooks", "functorch"), key=lambda m: t[f"opacus {m}"])
    per_sample = t["opacus hooks"] + t["randn(B, d)"]
    rows = [
        ("gaussian / non-private", t["privtool gaussian"] / t["non-private"], 1.3),
        (
            f"gaussian / fastest opacus ({fastest})",
            t["privtool gaussian"] / t[f"opacus {fastest}"],
            1.1,
        ),
        ("vmf / (opacus hooks step + randn(B,d))", t["privtool vmf (whole)"] / per_sample, 1.2),
    ]
    if device.type == "cuda":
        rows.append(
            ("vmf / gaussian (cuda)", t["privtool vmf (whole)"] / t["privtool gaussian"], 1.5)
        )
    print(f"d = {d} parameters")
    for name, ratio, target in rows:
        print(
            f"  {name:<44} {ratio:5.2f}x  (target <= {target}) "
            f"{'ok' if ratio <= target else 'OVER'}"
        )


if __name__ == "__main__":
    main()
