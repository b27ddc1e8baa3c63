"""One selection end to end, as library calls the ``select`` stage wires together:
plan the budget (:func:`plan`), load the parent and its pool (:func:`load_parent`), pick and
label points, fine-tune (:func:`select_and_finetune`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privtool.artifacts import load_run, parse_target
from privtool.config import SelectConfig
from privtool.errors import PrivtoolError
from privtool.select.budget import Candidate, Plan, choose_parent, record_relation
from privtool.select.finetune import FinetuneOutcome, finetune
from privtool.select.pool import PublicPool, build_pool
from privtool.select.signals import Signals, model_signals
from privtool.select.strategies import STRATEGIES, Selection, Task


def _privacy(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k.startswith("epsilon") or k.startswith("delta")}


def plan(
    strategy: str, target: str, cfg: SelectConfig, *, epsilon_limit: float | None = None
) -> Plan:
    """Which parent checkpoint ``strategy`` starts from and the composed (ε, δ) of the result.

    ``target`` RUN@EPOCH pins the checkpoint (refused if its composition exceeds the limit);
    RUN with a limit takes the latest checkpoint that fits (paper 2 §5.2); RUN without a limit
    takes the final model. Reads only the run's metadata (verified hashes), not the weights.
    """
    cls = STRATEGIES.get(strategy)
    limit = epsilon_limit if epsilon_limit is not None else cfg.epsilon_limit
    run_dir, epoch = parse_target(target)
    run = load_run(run_dir, stage="train")
    metrics = run["metrics"]
    mechanism = str(metrics.get("mechanism"))
    relation = record_relation(mechanism)
    checkpoints = list(metrics.get("checkpoints") or [])
    final = Candidate(str(run_dir), None, _privacy(metrics))
    if epoch is not None:
        from privtool.checkpoints import load_checkpoint

        found = [c for c in checkpoints if c.get("epoch") == epoch]
        if not found:
            load_checkpoint(target)  # raises the checkpoints module's one-line error
        candidates = [Candidate(f"{run_dir}@{epoch}", epoch, _privacy(found[0]))]
    elif limit is None or not checkpoints:
        candidates = [final]
    else:
        candidates = [
            Candidate(f"{run_dir}@{c['epoch']}", int(c["epoch"]), _privacy(c))
            for c in sorted(checkpoints, key=lambda c: c["epoch"])
        ]
    eps_support = None
    if cls.uses_private and cfg.near_private.epsilon_support is None:
        if limit is None:
            cls.costs(cfg, relation)  # raises: null epsilon_support needs a limit
        return _plan_rest(
            cls, candidates, cfg, relation, mechanism, metrics, limit, pinned=epoch is not None
        )
    extra = cls.costs(cfg, relation, eps_support)
    return choose_parent(
        candidates,
        mechanism=mechanism,
        metrics=metrics,
        extra=extra,
        limit=limit,
        pinned=epoch is not None,
        what=_what(extra),
    )


def _what(extra: list[Any]) -> str:
    if not extra:
        return "nothing (this strategy reads no private data)"
    return " + ".join(f"{c.name} epsilon {c.epsilon:g}" for c in extra)


def _plan_rest(
    cls: Any,
    candidates: list[Candidate],
    cfg: SelectConfig,
    relation: str,
    mechanism: str,
    metrics: dict[str, Any],
    limit: float,
    *,
    pinned: bool,
) -> Plan:
    """ε_support null: the latest checkpoint that leaves ε_support ≥ ε_dpPCA, which then gets
    everything the limit leaves (paper 2 Fig. 5c splits ε_limit between ε_dp and ε_support)."""
    floor = cfg.near_private.epsilon_pca
    probe = cls.costs(cfg, relation, floor)
    chosen = choose_parent(
        candidates,
        mechanism=mechanism,
        metrics=metrics,
        extra=probe,
        limit=limit,
        pinned=pinned,
        what=_what(probe) + " (at least)",
    )
    rest = limit - (chosen.parent.epsilon or 0.0) - cfg.near_private.epsilon_pca
    extra = cls.costs(cfg, relation, rest)
    return choose_parent(
        [chosen.candidate],
        mechanism=mechanism,
        metrics=metrics,
        extra=extra,
        limit=limit * (1 + 1e-9),
        pinned=True,
        what=_what(extra),
    )


@dataclass
class Parent:
    """A loaded parent checkpoint: model, data, splits and the DP model's signals (cached)."""

    target: Any  # privtool.attacks.base.Target
    model: Any
    x_test: Any
    y_test: Any
    _signals: dict[str, Signals] = field(default_factory=dict)

    def signals(self, name: str, x: np.ndarray) -> Signals:
        if name not in self._signals:
            self._signals[name] = model_signals(self.model, x, device=self.target.device)
        return self._signals[name]

    def pool_signals(self, pool: PublicPool) -> Signals:
        """Signals of a pool, cached by its recorded content (datasets, index hashes)."""
        return self.signals(f"pool:{pool.key}", pool.x)

    def private_signals(self) -> Signals:
        t = self.target
        return self.signals("private", t.data.x[t.splits["train"]])


def load_parent(spec: str, device: Any) -> Parent:
    """Load ``spec`` (RUN or RUN@EPOCH) with its data and splits, all checked."""
    import torch

    from privtool.attacks.target import load_target

    target = load_target(spec, device)
    model = target.build_model()
    test = target.splits["test"]
    return Parent(
        target=target,
        model=model,
        x_test=torch.from_numpy(target.data.x[test]).to(device),
        y_test=torch.from_numpy(target.data.y[test]).to(device),
    )


def parent_pool(parent: Parent, cfg: SelectConfig) -> PublicPool:
    t = parent.target
    return build_pool(cfg, t.params.data, t.data, t.splits)


@dataclass
class Outcome:
    """One (strategy, N, seed) cell: the selection, its labels and the fine-tuned model."""

    strategy: str
    n_labeled: int
    seed: int
    selection: Selection
    labels: np.ndarray
    finetuned: FinetuneOutcome | None
    metrics: dict[str, Any]


def check_selection(idx: np.ndarray, n_labeled: int, n_pool: int, strategy: str) -> np.ndarray:
    """The strategy contract: exactly ``n_labeled`` distinct indices of the pool."""
    idx = np.asarray(idx)
    if (
        idx.ndim != 1
        or len(idx) != n_labeled
        or len(np.unique(idx)) != n_labeled
        or not np.issubdtype(idx.dtype, np.integer)
        or idx.min() < 0
        or idx.max() >= n_pool
    ):
        raise PrivtoolError(
            f"internal error: strategy {strategy} returned {len(idx)} indices, "
            f"not {n_labeled} distinct ones in [0, {n_pool})"
        )
    return idx.astype(np.int64)


def select_and_finetune(
    parent: Parent,
    pool: PublicPool,
    plan_: Plan,
    cfg: SelectConfig,
    *,
    strategy: str,
    n_labeled: int,
    seed: int,
    progress: Any = None,
    record_curve: bool = True,
) -> Outcome:
    """Pick ``n_labeled`` pool points with ``strategy``, reveal their labels, fine-tune a copy
    of the parent model on them and score it on the private test split."""
    cls = STRATEGIES.get(strategy)
    if n_labeled > len(pool):
        raise PrivtoolError(
            f"select.n_labeled={n_labeled} is more than the {len(pool)} points "
            f"of the public pool ({pool.record['dataset']} "
            f"{pool.record['split']}); lower it or use a larger pool"
        )
    relation = record_relation(str(parent.target.metrics.get("mechanism")))
    eps_support = next((c.epsilon for c in plan_.extra if c.name.startswith("support")), None)
    rng = np.random.default_rng([seed, 2024])
    task = Task(
        n_labeled=n_labeled,
        public=parent.pool_signals(pool),
        cfg=cfg,
        rng=rng,
        relation=relation,
        private=parent.private_signals if cls.uses_private else None,
        epsilon_support=eps_support,
        noise_rng=_noise_rng(parent),
    )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # small dense algebra: avoid oversubscription
        selection = cls().select(task)
    idx = check_selection(selection.indices, n_labeled, len(pool), strategy)
    selection.indices = idx
    labels = pool.reveal(idx)
    model = copy.deepcopy(parent.model)
    tuned = finetune(
        model,
        pool.x[idx],
        labels,
        parent.x_test,
        parent.y_test,
        cfg=cfg.finetune,
        seed=seed,
        device=parent.target.device,
        progress=progress,
        record_curve=record_curve,
    )
    metrics: dict[str, Any] = {
        "strategy": strategy,
        "n_labeled": n_labeled,
        "seed": seed,
        "test_accuracy": tuned.test_accuracy,
        "test_loss": tuned.test_loss,
        "n_pool": len(pool),
        "n_classes_selected": int(len(np.unique(labels))),
        **{k: v for k, v in selection.details.items()},
    }
    if pool.polluted.any():
        metrics["pollution_selected_fraction"] = pool.pollution_fraction(idx)
        metrics["pollution_pool_fraction"] = float(pool.polluted.mean())
    return Outcome(strategy, n_labeled, seed, selection, labels, tuned, metrics)


def _noise_rng(parent: Parent) -> np.random.Generator | None:
    """Secret DP noise for NearPrivate's releases unless the parent run's noise is reproducible
    (train.noise_seed=from-seed): then the selection seed drives it too (privtool.release)."""
    from privtool.release import secret_numpy_rng

    if parent.target.params.train.noise_seed == "from-seed":
        return None
    return secret_numpy_rng()


def noise_label(parent: Parent) -> str:
    """The ``noise`` field of a selection: its parent's (NearPrivate's noise follows it)."""
    from privtool.release import noise_label as label

    return label(parent.target.params.train)


def later_checkpoints_warning(plan_: Plan) -> str | None:
    """A warning when the parent is a checkpoint with later ones (or model.pt) in its run: the
    parent's ε holds only while they stay private."""
    from privtool.artifacts import load_run

    epoch = plan_.candidate.epoch
    if epoch is None:
        return None
    run_dir = plan_.candidate.spec.rpartition("@")[0]
    m = load_run(run_dir, stage="train")["metrics"]
    later = [int(c["epoch"]) for c in m.get("checkpoints") or [] if int(c["epoch"]) > epoch]
    final = _final_epsilon(m)
    if not later and m.get("epochs") == epoch:
        return None
    what = f"its later checkpoints (epochs {', '.join(map(str, later))}) and" if later else "its"
    return (
        f"the parent {plan_.candidate.spec}'s ε holds only while {what} final model.pt in "
        f"{run_dir} stay private; releasing them all costs the run's final ε "
        f"{'∞' if final is None else f'{final:.4g}'} (see `privtool export`)"
    )


def _final_epsilon(m: dict[str, Any]) -> Any:
    mech = str(m.get("mechanism"))
    return m.get(f"epsilon_{mech}", m.get("epsilon"))


def privacy_metrics(plan_: Plan) -> dict[str, Any]:
    """The composed guarantee as metrics: ``epsilon``/``delta`` of the fine-tuned model, the
    parent's, each release's, and the rule (basic composition)."""
    eps_terms, delta_terms = ["epsilon_dp"], ["delta_dp"]
    out: dict[str, Any] = {
        "epsilon": plan_.epsilon,
        "delta": plan_.delta,
        "parent_epsilon": plan_.parent.epsilon,
        "parent_delta": plan_.parent.delta,
        "epsilon_relation": plan_.parent.relation,
    }
    for c in plan_.extra:
        key = _KEYS.get(c.name, c.name)
        out[f"epsilon_{key}"] = c.epsilon
        eps_terms.append(f"epsilon_{key}")
        if c.delta:
            out[f"delta_{key}"] = c.delta
            delta_terms.append(f"delta_{key}")
    out["composition"] = (
        f"basic: epsilon = {' + '.join(eps_terms)}; delta = {' + '.join(delta_terms)}"
    )
    if plan_.limit is not None:
        out["epsilon_limit"] = plan_.limit
    return out


_KEYS = {"DP-PCA (Analyze Gauss)": "dp_pca", "support counts (Laplace)": "support"}


def parent_record(parent: Parent, plan_: Plan) -> dict[str, Any]:
    """How meta.json links the parent: run, epoch, file and content hashes."""
    from privtool.artifacts import MODEL, file_hash
    from privtool.checkpoints import checkpoint_file

    t = parent.target
    run_dir = Path(t.dir)
    fname = MODEL if t.epoch is None else checkpoint_file(t.epoch)
    return {
        "run": str(run_dir),
        "epoch": t.epoch,
        "spec": plan_.candidate.spec,
        "file": fname,
        "file_sha256": file_hash(run_dir / fname),
        "meta_sha256": file_hash(run_dir / "meta.json"),
        "mechanism": t.metrics.get("mechanism"),
        "privacy": dict(t.privacy),
    }
