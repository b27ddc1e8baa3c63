"""Cost of ``train.augment`` (issue 20): the per-run record keys and the per-batch transform,
beside one plain training step of the same batch.

    python benchmarks/augment_overhead.py [--n 50000] [--shape 3 32 32] [--batch 256]

Prints the time to key n records (:func:`privtool.augment.record_keys`, once per run), to draw
and apply one batch's mirror + shift (:class:`privtool.augment.BatchAugment`), and one
non-private SGD step of LeNet on that batch (forward + backward + update), on CPU.

Measured on the shared 2-core CPU (2026-12-02): 50,000 × (3, 32, 32): keys 0.77 s, batch 256
mirror-shift ±4 4.0 ms vs a LeNet step 31 ms (13 %); 5,000 × (1, 28, 28): keys 0.02 s, batch 128
0.7 ms vs 9.9 ms (7 %). Per-sample-gradient (DP) steps cost several times more, so less there.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from privtool.augment import BatchAugment, record_keys
from privtool.config import TrainConfig
from privtool.models import build_model


def timed(fn, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--shape", type=int, nargs=3, default=[3, 32, 32])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((args.n, *shape), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, args.n))
    t0 = time.perf_counter()
    keys = record_keys(x, y)
    t_keys = time.perf_counter() - t0
    aug = BatchAugment.for_keys(TrainConfig(augment="mirror-shift"), shape, 0, keys)
    idx = rng.choice(args.n, args.batch, replace=False)
    xb, yb = x[idx], y[idx]
    t_aug = timed(lambda: aug(xb, idx, 7), args.repeats)
    model = build_model("lenet", shape, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()

    t_step = timed(step, args.repeats)
    s = aug.s
    print(f"n = {args.n} records {shape}: record keys {t_keys:.2f} s (once per run)")
    print(
        f"batch {args.batch}, mirror-shift ±{s}: augmentation {1000 * t_aug:.2f} ms, "
        f"LeNet SGD step {1000 * t_step:.2f} ms ({100 * t_aug / t_step:.0f} %)"
    )


if __name__ == "__main__":
    main()
