"""Benchmark: membership scoring time per 1,000 evaluation points given a store (issue 20).

RMIA and LiRA are numpy over the store's saved logits, so their cost is a function of array
shapes only: N reference models per set, Q queries (``attack.augment``: 1, 2, 9 or 18), n
evaluation points, m population points (RMIA: the shadow split) and C classes. This times the
pure scoring on random logits of those shapes (no model is run): RMIA offline with ``a`` tuned
(11 values × N pseudo-targets, the dominant cost), RMIA online, and LiRA offline + online for
comparison. Target: seconds, not minutes.

    python benchmarks/rmia_scoring.py --models 8 --eval 1000 --population 2000 --queries 1 18

Measured on the shared 2-core CPU (2026-12-02, per 1,000 points): Q = 1: log-probabilities
24 ms, tuning a 251 ms, RMIA offline 0.4 ms, online 0.2 ms, LiRA offline + online 16 ms;
Q = 18: 396 ms, 1864 ms, 14 ms, 13 ms, 167 ms. End to end, `privtool attack --attack rmia` on
mnist-5k (MLP, 4 + 4 stored models, 1,000 + 1,000 points) reports 0.3–0.4 s (`seconds`: target
forward passes + scoring); the process start and dataset load around it are what every attack
stage pays.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from privtool.attacks.mia_scores import lira_offline, lira_online
from privtool.attacks.rmia import (
    offline_log_ratio,
    online_log_ratio,
    rmia_scores,
    true_class_log_prob,
    tune_offline_a,
)
from privtool.attacks.signals import scaled_logit


def _pairs(rng: np.random.Generator, n_models: int, n: int) -> np.ndarray:
    mask = np.zeros((n_models, n), bool)
    for k in range(0, n_models, 2):
        half = rng.random(n) < 0.5
        mask[k] = half
        if k + 1 < n_models:
            mask[k + 1] = ~half
    return mask


def run(n_models: int, n_eval: int, n_pop: int, q: int, c: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y_x, y_z = rng.integers(0, c, n_eval), rng.integers(0, c, n_pop)
    t_x, t_z = rng.normal(0, 3, (q, n_eval, c)), rng.normal(0, 3, (q, n_pop, c))
    off_x, off_z = (
        rng.normal(0, 3, (n_models, q, n_eval, c)),
        rng.normal(0, 3, (n_models, q, n_pop, c)),
    )
    on_x = rng.normal(0, 3, (n_models, q, n_eval, c))
    in_z, in_on = _pairs(rng, n_models, n_pop), _pairs(rng, n_models, n_eval)
    out_x = np.ones((n_models, n_eval), bool)
    times = {}

    t0 = time.perf_counter()
    lx, lz = true_class_log_prob(t_x, y_x), true_class_log_prob(t_z, y_z)
    ox, oz = true_class_log_prob(off_x, y_x), true_class_log_prob(off_z, y_z)
    on_lp = true_class_log_prob(on_x, y_x)
    times["log_probs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    a, _ = tune_offline_a(oz, in_z, ox, 2.0)
    times["rmia_tune_a"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rmia_scores(offline_log_ratio(lx, ox, ~out_x, a), offline_log_ratio(lz, oz, ~in_z, a), 2.0)
    times["rmia_offline"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rmia_scores(online_log_ratio(lx, on_lp), online_log_ratio(lz, oz), 2.0)
    times["rmia_online"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    phi, ref_off, ref_on = scaled_logit(t_x, y_x), scaled_logit(off_x, y_x), scaled_logit(on_x, y_x)
    for k in range(q):
        lira_offline(phi[k], ref_off[:, k], out_x)
        lira_online(phi[k], ref_on[:, k], in_on)
    times["lira_both"] = time.perf_counter() - t0
    return {k: v / n_eval * 1000 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--eval", type=int, default=1000)
    ap.add_argument("--population", type=int, default=2000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--queries", type=int, nargs="+", default=[1, 18])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(
        f"N = {args.models} models per set, n = {args.eval} evaluation points, "
        f"m = {args.population} population points, C = {args.classes}; time per 1,000 "
        f"points, median of {args.repeats}"
    )
    for q in args.queries:
        runs = [
            run(args.models, args.eval, args.population, q, args.classes, seed=r)
            for r in range(args.repeats)
        ]
        med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        print(f"Q = {q:2d} queries: " + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in med.items()))


if __name__ == "__main__":
    main()
