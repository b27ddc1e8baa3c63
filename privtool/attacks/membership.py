"""Membership inference (paper 1 §5.1–5.2; SPEC §6): the frame every membership attack runs in.

Attacks are pure functions of saved arrays — the target's logits on the evaluation points
and the reference/shadow models' logits on the same points with their in/out masks (from
:mod:`privtool.store`) — returning one score per point, higher meaning
"member" (:mod:`privtool.attacks.mia_scores`; the registered ``loss``, ``reference``,
``lira``, ``shokri`` in :mod:`privtool.attacks.mia_attacks`, ``rmia`` in
:mod:`privtool.attacks.rmia`).

The :class:`MembershipAttack` frame picks the evaluation set as paper 1 §5.2 does (D_in =
target training points, D_out = as many held-out test points, by index), asks the store for
signals, scores, writes ``scores.npz``, ``plots/roc.csv`` and ``roc.png`` and the views, and
returns a :class:`~privtool.results.MembershipResult`.
"""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from privtool.attacks.audit import Roc, plot_roc, roc_rows, score_attack
from privtool.attacks.base import Attack, Target
from privtool.attacks.signals import cross_entropy
from privtool.errors import PrivtoolError
from privtool.mechanisms.base import is_private
from privtool.results import MembershipResult, MembershipViews, RocScores
from privtool.schema import Rule, settings, validate

# --------------------------------------------------------------------------- the frame


def evaluation_set(
    splits: dict[str, np.ndarray], n_eval: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paper 1 §5.2: D_in = target training points, D_out = as many held-out (test) points.
    ``n_eval`` per side (None: the smaller split). Returns (dataset indices, member mask), in
    a seeded random order."""
    train, test = np.asarray(splits["train"]), np.asarray(splits["test"])
    n = min(len(train), len(test))
    if n_eval is not None:
        if n_eval > n:
            raise PrivtoolError(
                f"attack n_eval={n_eval} exceeds the {n} points available on "
                f"each side (train {len(train)}, test {len(test)}); lower it or "
                f"use null"
            )
        n = n_eval
    if n < 1:
        raise PrivtoolError(
            "the target run has an empty train or test split; membership attacks need both"
        )
    rng = np.random.default_rng([seed, 4])
    d_in = np.sort(rng.choice(train, size=n, replace=False))
    d_out = np.sort(rng.choice(test, size=n, replace=False))
    # shuffled, so that nothing downstream can read membership off the position
    perm = rng.permutation(2 * n)
    return (
        np.r_[d_in, d_out].astype(np.int64)[perm],
        np.r_[np.ones(n, bool), np.zeros(n, bool)][perm],
    )


def target_logits(target: Target, index: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The target model's logits on dataset points ``index`` (float32, (n, C))."""
    from privtool.store import predict_logits

    return predict_logits(target.build_model(), target.data.x, index, target.device, batch_size)


def _epsilon_label(target: Target) -> str:
    """'ε = 3' / 'ε_class = 8, ε_record = 16' / 'ε = ∞' for a plot title."""
    fields = {
        k: v
        for k, v in target.privacy.items()
        if k.startswith("epsilon") and isinstance(v, (int, float))
    }
    if not is_private(target.mechanism) or not fields:
        return "ε = ∞"
    if "epsilon" in fields:
        fields = {"epsilon": fields["epsilon"]}
    return ", ".join(f"ε{k[len('epsilon') :]} = {v:.3g}" for k, v in list(fields.items())[:2])


@settings(n_eval=Rule(ge=1))
@dataclass(frozen=True)
class MembershipOptions:
    """Keys every membership attack has under ``attack.<name>:``."""

    n_eval: int | None = None  # points per side of the evaluation set (null: all that fit)

    section: ClassVar[str] = "attack.<membership attack>"

    def __post_init__(self) -> None:
        validate(self)


class MembershipAttack(Attack):
    """Shared frame: evaluation set, target signals, store signals, scoring and artifacts.
    Subclasses implement :meth:`scores` (pure over the signals) and say which store they need
    (``role``: ``reference`` = the target's recipe without DP, ``shadow`` = the target's own
    recipe; ``online``: also models trained on the evaluation points)."""

    kind = "membership"
    Options = MembershipOptions
    role: ClassVar[str | None] = "reference"
    online: ClassVar[bool] = False

    def store_role(self) -> str | None:
        return self.role

    def check(self, target: Target) -> None:
        for name in ("train", "test"):
            if name not in target.splits or not len(target.splits[name]):
                raise PrivtoolError(
                    f"target run {target.dir} has no '{name}' split; membership "
                    f"attacks need data.splits.{name}"
                )
        if self.store_role() is not None:
            from privtool.store import check_store_inputs

            check_store_inputs(target, self.cfg, self.store_role())
        evaluation_set(target.splits, self.options.n_eval, self.cfg.seed)

    @abstractmethod
    def scores(self, signals: dict[str, Any]) -> dict[str, np.ndarray]:
        """Variant name -> scores (higher = member), the first being the headline one."""

    def extra_metrics(
        self, signals: dict[str, Any], scores: dict[str, np.ndarray], member: np.ndarray
    ) -> dict[str, Any]:
        """Attack-specific numbers, scored against the membership labels: keyword arguments
        of :class:`~privtool.results.MembershipResult` (its attack-specific fields)."""
        return {}

    def more_signals(
        self, target: Target, signals: dict[str, Any], progress: Any = None
    ) -> dict[str, Any]:
        """Signals beyond the target's plain logits and the store (augmented queries, the
        target on population points), computed once the store exists."""
        return {}

    def run(self, target: Target, out: Path, progress: Any = None) -> MembershipResult:
        from privtool.artifacts import write_csv

        cfg = self.cfg
        t0 = time.time()
        index, member = evaluation_set(target.splits, self.options.n_eval, cfg.seed)
        labels = target.data.y[index]
        logits = target_logits(target, index)
        # What the attacker holds: the target's outputs, the points' labels, its published
        # mean training loss and its own store; never the membership labels (breaching's rule).
        signals: dict[str, Any] = {
            "index": index,
            "labels": labels,
            "logits": logits,
            "loss": cross_entropy(logits, labels),
            "n_classes": target.data.n_classes,
            "train_loss": target.metrics.get("train_loss"),
        }
        info: dict[str, Any] = {}
        role = self.store_role()
        if role is not None:
            from privtool.store import ensure_store

            store = ensure_store(target, cfg, role=role, online=self.online, progress=progress)
            signals["store"] = store
            info = store.describe()
        signals.update(self.more_signals(target, signals, progress))
        scores = self.scores(signals)
        seconds = time.time() - t0

        curves: dict[str, Roc] = {}
        scored: dict[str, RocScores] = {}
        for variant, s in scores.items():
            m, curves[variant] = score_attack(
                s, member, confidence=cfg.confidence, delta=cfg.delta, sides=cfg.epsilon_sides
            )
            scored[variant] = RocScores.from_scored(m)
        tr_loss = signals["loss"][member]
        te_loss = signals["loss"][~member]
        pred = logits.argmax(1) == labels
        result = MembershipResult(
            scores=next(iter(scored.values())),
            variants=scored if len(scored) > 1 else {},
            store=info,
            eval_train_accuracy=float(pred[member].mean()),
            eval_test_accuracy=float(pred[~member].mean()),
            eval_train_loss=float(tr_loss.mean()),
            eval_test_loss=float(te_loss.mean()),
            seed=cfg.seed,
            seconds=round(seconds, 3),
            warnings=list(signals["warnings"]) if signals.get("warnings") else None,
            **self.extra_metrics(signals, scores, member),
        )

        np.savez_compressed(
            out / "scores.npz",
            index=index,
            member=member,
            label=labels,
            target_loss=signals["loss"],
            target_logits=logits,
            **{f"score_{k}": v for k, v in scores.items()},
            **{k[len("extra_") :]: v for k, v in signals.items() if k.startswith("extra_")},
        )
        first = next(iter(curves))
        write_csv(out / "plots" / "roc.csv", roc_rows(curves[first]))
        for variant, roc in list(curves.items())[1:]:
            write_csv(out / "plots" / f"roc_{variant}.csv", roc_rows(roc))
        plot_roc(
            out / "roc.png",
            curves,
            f"{self.name} vs {target.mechanism} ({_epsilon_label(target)}), "
            f"{len(member) // 2} in / {len(member) // 2} out",
        )
        from privtool.attacks.views import write_views

        raw = dict(
            write_views(
                out,
                scores[first],
                member,
                index,
                labels,
                target.data.x,
                target.data.classes,
                f"{self.name} ({first}) vs {target.mechanism} ({_epsilon_label(target)})",
            )
        )
        views = MembershipViews.parse(raw)
        assert not raw, f"views keys without a MembershipViews field: {sorted(raw)}"
        return dataclasses.replace(result, views=views)
