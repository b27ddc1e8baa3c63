"""Cost of a one-run gradient-canary audit against plain training on the same records (issue 16).

    python benchmarks/audit_overhead.py [--canaries 1000] [--epochs 2] [--target RUN ...]

For each target (default: a Gaussian ε = 4 and a VMF ε_V = 10⁴ LeNet run on mnist-5k, trained
here for --epochs), prints the training time of
  * the recipe on its n records (privtool train's loop, no canaries);
  * the audit run with input canaries — plain training of the recipe on the n + M_in records
    it sees (n + M for VMF's replace-one slots), the mechanism untouched;
  * the audit run with gradient canaries — the n real records forwarded, the sampled canary
    rows appended to the per-sample gradients, the released gradients summed for scoring;
and gradient / input (issue 16's target: < 1.10, "one run on the n + M/2 records it sees").
Every audit is one training run; it never trains a second.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from privtool.attacks.target import load_target
from privtool.audit.run import AuditConfig, train_with_canaries


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--canaries", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--target", action="append", default=None)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    targets = args.target
    if not targets:
        targets = []
        for name, extra in (
            ("gauss-eps4", ["--mech", "gaussian", "--epsilon", "4"]),
            ("vmf-epsv10k", ["--mech", "vmf", "--set", "train.epsilon_v=10000"]),
        ):
            out = tmp / name
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "privtool",
                    "train",
                    *extra,
                    "--epochs",
                    str(args.epochs),
                    "--out",
                    str(out),
                ],
                check=True,
                capture_output=True,
            )
            targets.append(str(out))
    for spec in targets:
        target = load_target(spec, "cpu")
        times = {"plain": min(_plain(target) for _ in range(args.repeats))}
        for kind in ("input", "gradient"):
            cfg = AuditConfig(canary=kind, canaries=args.canaries)
            best = min(
                train_with_canaries(target, cfg, 0, "cpu").seconds for _ in range(args.repeats)
            )
            times[kind] = best
        print(
            f"{target.mechanism:9s} {Path(spec).name}: recipe on n records "
            f"{times['plain']:.2f}s; on n + M_in records (input canaries) "
            f"{times['input']:.2f}s; with {args.canaries} gradient canaries "
            f"{times['gradient']:.2f}s; gradient / input {times['gradient'] / times['input']:.3f} "
            f"(target < 1.10), gradient / plain {times['gradient'] / times['plain']:.3f}"
        )


def _plain(target) -> float:
    """Seconds of privtool's training loop on the recipe's n records, no canaries."""
    import torch

    from privtool.models import build_model
    from privtool.training import seed_everything, train_model

    cfg, data, s = target.params.train, target.data, target.splits
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data.shape, data.n_classes)
    t = {
        k: (torch.from_numpy(data.x[s[k]]), torch.from_numpy(data.y[s[k]]))
        for k in ("train", "test")
    }
    return train_model(cfg, model, *t["train"], *t["test"], device=torch.device("cpu")).seconds


if __name__ == "__main__":
    main()
