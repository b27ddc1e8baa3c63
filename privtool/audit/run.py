"""Audit a training run: re-train its recipe with canaries, score them, bound ε from below.

``audit(target, cfg)`` re-trains the target's recipe — its data, splits, model, mechanism and
``train:`` settings as recorded in its meta.json — on the n training records plus M canary
slots (:mod:`privtool.audit.canaries`): the schedule (sampling rate b/(n + M), steps, and σ or κ
solved again for a ``train.epsilon`` target) is that of all n + M slots, fixed before the coins
are drawn; under add/remove an excluded canary's slot is empty, under replace-one it holds the
canary's twin. ``audit.runs`` runs with independent canary coins and
training seeds ``train.seed + r``. Every run's accountant gives the accounted (upper) ε of that
run at the run's δ; the estimators (:mod:`privtool.audit.estimators`) give the audited (lower)
ε at ``audit.confidence`` and the same δ. The one-run bound uses run 0; with ``runs > 1`` the
many-run bounds use all runs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from privtool.audit.canaries import (
    CanaryMechanism,
    GradientCanaries,
    check_supported,
    draw_inclusion,
    gradient_activity,
    input_canaries,
    input_scores,
    replaces,
)
from privtool.audit.estimators import epsilon_many_runs, epsilon_one_run
from privtool.errors import PrivtoolError
from privtool.schema import Rule, build, invalid, seed_rule, settings, validate


@settings(
    "audit",
    canary=Rule(choices=("input", "gradient")),
    canaries=Rule(ge=2),
    runs=Rule(ge=1),
    confidence=Rule(gt=0, lt=1),
    guesses=Rule(ge=1, allowed="null (a grid) or an integer in [1, audit.canaries]"),
    direction=Rule(choices=("dirac", "random")),
    score=Rule(choices=("sum", "spikes")),
    split=Rule(
        check=lambda v: v != "train",
        allowed="a split the run does not train on (shadow, public, test)",
    ),
    seed=seed_rule(),
    device=Rule(choices=("auto", "cpu", "cuda")),
    workers=Rule(ge=0),
)
@dataclass(frozen=True)
class AuditConfig:
    """``params.yaml: audit:`` — how ``privtool audit`` builds and scores its canaries."""

    canary: str = "gradient"  # input (black box) | gradient (white box)
    canaries: int = 1000  # M
    runs: int = 1  # R: 1 = the one-run audit; > 1 adds the many-run bounds
    confidence: float = 0.95
    guesses: int | None = None  # k; null: the best of a grid, with a union bound over it
    two_sided: bool = False  # also guess "out" for the lowest scores
    direction: str = "dirac"  # gradient canaries: dirac | random
    score: str = "sum"  # gradient canaries: sum (Σ_t ⟨c, g_t⟩) | spikes (per-step LR, dirac)
    split: str = "shadow"  # input canaries: their images; dirac: where quiet coords are measured
    seed: int = 0  # canary choice and inclusion coins
    device: str = "auto"
    workers: int = 0  # processes for runs > 1 (0: one per CPU core)

    def __post_init__(self) -> None:
        validate(self)
        if self.guesses is not None and self.guesses > self.canaries:
            raise invalid(
                "audit.guesses", self.guesses, "null (a grid) or an integer in [1, audit.canaries]"
            )


def audit_settings(section: dict[str, Any] | None) -> AuditConfig:
    """``params.yaml: audit:`` -> :class:`AuditConfig`; unknown keys name the valid ones."""
    return build(AuditConfig, section, "audit")


@dataclass
class RunScores:
    """One audit training run: canary scores and coins, and the run's own numbers."""

    scores: np.ndarray
    member: np.ndarray
    accounted_epsilon: float | None
    delta: float | None
    test_accuracy: float
    steps: int
    sample_rate: float
    n_train: int
    seconds: float
    appearances: np.ndarray | None = None
    per_step: np.ndarray | None = None  # Dirac canaries: ⟨c_i, g_t⟩, steps × canaries
    records: int = 0  # records present: n + M_in (add/remove) or n + M (replace-one twins)


def _recipe(target: Any, cfg: AuditConfig, run: int, device: Any) -> Any:
    train = target.params.train
    changes: dict[str, Any] = {"seed": train.seed + run, "device": str(device)}
    if target.epoch is not None:  # RUN@N: the recipe up to that checkpoint
        changes["epochs"] = int(target.epoch)
    if cfg.canary == "gradient" and train.grad_sample_mode == "ghost":
        changes["grad_sample_mode"] = "hooks"  # per-sample rows to hold the canaries; same noise
    return replace(train, **changes)


def train_with_canaries(
    target: Any, cfg: AuditConfig, run: int, device: Any, progress: Any = None
) -> RunScores:
    """Audit training run ``run`` (0-based) of ``target``'s recipe with ``cfg``'s canaries."""
    import torch

    from privtool.models import build_model
    from privtool.training import seed_everything, train_model

    train = _recipe(target, cfg, run, device)
    check_supported(cfg.canary, train.mech)
    data, splits = target.data, target.splits
    m = cfg.canaries
    member = draw_inclusion(m, cfg.seed * 1_000_003 + run)
    twin = replaces(train.mech)

    def tensor(a: np.ndarray, dtype: Any = None) -> Any:
        return torch.as_tensor(a, dtype=dtype).to(device)

    tr = splits["train"]
    x_tr, y_tr = tensor(data.x[tr]), tensor(data.y[tr])
    seed_everything(train.seed)
    model = build_model(train.model, data.shape, data.n_classes)
    grads = None
    if cfg.canary == "input":
        if cfg.split not in splits:
            raise PrivtoolError(
                f"audit.split={cfg.split!r} is not a split of this run; it has "
                f"{', '.join(k for k in splits if k != 'train')}"
            )
        idx, lab_in, lab_twin = input_canaries(
            data.y, splits[cfg.split], m, data.n_classes, cfg.seed
        )
        x_all = torch.cat([x_tr, tensor(data.x[idx])])
        y_all = torch.cat([y_tr, tensor(np.where(member, lab_in, lab_twin), torch.int64)])
    else:
        dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
        activity = None
        if cfg.direction == "dirac":
            pool = splits.get(cfg.split, splits["test"])
            model.to(device)
            activity = gradient_activity(model, tensor(data.x[pool]), tensor(data.y[pool]))
        grads = GradientCanaries(
            m,
            dim,
            norm=train.max_grad_norm,
            direction=cfg.direction,
            seed=cfg.seed,
            activity=activity,
        )
        # slot rows only size the schedule (n + M): their images are never forwarded
        x_all = torch.cat([x_tr, x_tr[:1].expand(m, *x_tr.shape[1:])])
        y_all = torch.cat([y_tr, y_tr[:1].expand(m)])

    def make_mechanism(c: Any, schedule: Any) -> Any:
        return CanaryMechanism(
            c, schedule, n_real=len(tr), member=member, twin=twin, canaries=grads
        )

    te = splits["test"]
    t0 = time.perf_counter()
    outcome = train_model(
        train,
        model,
        x_all,
        y_all,
        tensor(data.x[te]),
        tensor(data.y[te]),
        device=device,
        progress=progress,
        make_mechanism=make_mechanism,
    )
    seconds = time.perf_counter() - t0
    per_step = None
    appearances = outcome.mechanism.appearances
    if cfg.canary == "input":
        scores = input_scores(
            outcome.model,
            tensor(data.x[idx]),
            tensor(lab_in, torch.int64),
            tensor(lab_twin, torch.int64),
            train.eval_batch_size,
        )
    else:
        scores = outcome.mechanism.scores(cfg.score)
        per_step = np.stack(outcome.mechanism.per_step) if outcome.mechanism.per_step else None
    met = outcome.metrics
    return RunScores(
        scores=scores,
        member=member,
        accounted_epsilon=met.get("epsilon"),
        delta=met.get("delta") if met.get("delta") is not None else train.delta,
        test_accuracy=float(met["test_accuracy"]),
        steps=int(met["steps"]),
        sample_rate=float(met.get("sample_rate", float("nan"))),
        n_train=int(met["n_train"]),
        seconds=seconds,
        appearances=appearances,
        per_step=per_step,
        records=len(tr) + int(m if twin else member.sum()),
    )


def _run_job(job: dict[str, Any]) -> RunScores:
    """Process-pool entry: load the target in this process and train one audit run."""
    import torch

    from privtool.attacks.target import load_target

    torch.set_num_threads(1)
    target = load_target(job["target"], "cpu")
    return train_with_canaries(target, AuditConfig(**job["cfg"]), job["run"], "cpu")


def _cpu_count() -> int:
    from privtool.store import cpu_count as count

    return count()


def train_runs(
    target: Any, target_spec: str, cfg: AuditConfig, device: Any, progress: Any = None
) -> list[RunScores]:
    """All ``cfg.runs`` audit runs: in-process (one run, one worker, or CUDA), else one process
    per core (``audit.workers``)."""
    workers = max(1, min(cfg.workers or _cpu_count(), cfg.runs))
    if cfg.runs == 1 or workers == 1 or getattr(device, "type", str(device)) == "cuda":
        return [train_with_canaries(target, cfg, r, device, progress) for r in range(cfg.runs)]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    jobs = [{"target": target_spec, "cfg": asdict(cfg), "run": r} for r in range(cfg.runs)]
    if progress is not None:
        progress.start(cfg.runs, f"audit {cfg.runs} runs on {workers} processes")
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            out = []
            for res in pool.map(_run_job, jobs):
                out.append(res)
                if progress is not None:
                    progress.advance(run=len(out), acc=res.test_accuracy)
            return out
    finally:
        if progress is not None:
            progress.stop()


def estimate(runs: list[RunScores], cfg: AuditConfig, *, delta: float) -> dict[str, Any]:
    """Every estimator's ε_lb over ``runs`` (one-run on run 0; many-run when R > 1)."""
    first = runs[0]
    one = epsilon_one_run(
        first.scores,
        first.member,
        confidence=cfg.confidence,
        delta=delta,
        k=cfg.guesses,
        two_sided=cfg.two_sided,
    )
    out: dict[str, Any] = {"one_run": one.as_dict()}
    if len(runs) > 1:
        out["many_runs"] = epsilon_many_runs(
            np.stack([r.scores for r in runs]),
            np.stack([r.member for r in runs]),
            confidence=cfg.confidence,
            delta=delta,
            one_sided=not cfg.two_sided,
        )
    return out


def summarize(
    target: Any, cfg: AuditConfig, runs: list[RunScores], estimates: dict[str, Any]
) -> dict[str, Any]:
    """audit.json: the sandwich (headline: the one-run ε_lb of run 0 and that run's accounted
    ε at the same δ), every estimator, the canaries and the runs."""
    from privtool.mechanisms import MECHANISMS

    first, one = runs[0], estimates["one_run"]
    accounted = first.accounted_epsilon
    out: dict[str, Any] = {
        "canary": cfg.canary,
        "direction": cfg.direction if cfg.canary == "gradient" else None,
        "score": cfg.score if cfg.canary == "gradient" else "loss(x, b) - loss(x, a)",
        "canaries": cfg.canaries,
        "canaries_in": int(first.member.sum()),
        "runs": len(runs),
        "confidence": cfg.confidence,
        "delta": first.delta,
        "two_sided": cfg.two_sided,
        "epsilon_lb": one["epsilon_lb"],
        "epsilon_lb_estimator": "one run (Steinke, Nasr & Jagielski 2023)",
        "epsilon_lb_one_run": one["epsilon_lb"],
        "guesses": one["guesses"],
        "correct": one["correct"],
        "epsilon_accounted": accounted,
        "relation": MECHANISMS.get(target.mechanism).relation,
        "sandwich_holds": accounted is None or one["epsilon_lb"] <= accounted,
        "target_mechanism": target.mechanism,
        "target_dir": str(target.dir),
        "target_epoch": target.epoch,
        "target_epsilon": target.privacy.get("epsilon"),
        "test_accuracy": first.test_accuracy,
        "steps": first.steps,
        "sample_rate": first.sample_rate,
        "n_train_with_canaries": first.n_train,
        "records_present": first.records,
        "audit_seconds": round(sum(r.seconds for r in runs), 3),
        "estimators": estimates,
        "runs_detail": [
            {
                "run": i,
                "epsilon_accounted": r.accounted_epsilon,
                "canaries_in": int(r.member.sum()),
                "n_train": r.n_train,
                "test_accuracy": r.test_accuracy,
                "seconds": round(r.seconds, 3),
            }
            for i, r in enumerate(runs)
        ],
    }
    if first.appearances is not None:
        out["mean_appearances_in"] = float(first.appearances[first.member].mean())
    if "many_runs" in estimates:
        many = estimates["many_runs"]
        worst = [r.accounted_epsilon for r in runs]
        out["epsilon_lb_clopper_pearson"] = many["epsilon_lb_clopper_pearson"]
        out["epsilon_lb_gdp"] = many["epsilon_lb_gdp"]
        out["epsilon_accounted_max_over_runs"] = (
            None if any(e is None for e in worst) else max(worst)
        )
    return out
