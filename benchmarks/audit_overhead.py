"""Cost of a one-run gradient-canary audit against plain training on the same records (issue 16).

    python benchmarks/audit_overhead.py [--canaries 1000] [--epochs 2] [--target RUN ...]

For each target (default: a Gaussian ε = 4 and a VMF ε_V = 10⁴ LeNet run on mnist-5k, trained
here for --epochs), prints the training time of
  * the audit run with input canaries — plain training of the recipe on the same n + M_in
    records (n + M for VMF's replace-one slots), the mechanism untouched;
  * the audit run with gradient canaries — the same records, the canary rows substituted into
    the per-sample gradients and the released gradients summed for scoring;
and their ratio (target: < 1.10). Both are one training run; the audit never trains a second.
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
        for name, extra in (("gauss-eps4", ["--mech", "gaussian", "--epsilon", "4"]),
                            ("vmf-epsv10k", ["--mech", "vmf", "--set", "train.epsilon_v=10000"])):
            out = tmp / name
            subprocess.run([sys.executable, "-m", "privtool", "train", *extra, "--epochs",
                            str(args.epochs), "--out", str(out)], check=True,
                           capture_output=True)
            targets.append(str(out))
    for spec in targets:
        target = load_target(spec, "cpu")
        times = {}
        for kind in ("input", "gradient"):
            cfg = AuditConfig(canary=kind, canaries=args.canaries)
            best = min(train_with_canaries(target, cfg, 0, "cpu").seconds
                       for _ in range(args.repeats))
            times[kind] = best
        print(f"{target.mechanism:9s} {Path(spec).name}: plain training on the same records "
              f"{times['input']:.2f}s, with gradient canaries {times['gradient']:.2f}s, "
              f"ratio {times['gradient'] / times['input']:.3f} (target < 1.10)")


if __name__ == "__main__":
    main()
