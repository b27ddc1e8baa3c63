"""Membership inference attacks (paper 1 §5.1–5.2; SPEC §6) as pure functions of signals.

Every attack is a function of saved arrays — the target's logits on the evaluation points
and the reference/shadow models' logits on the same points with their in/out masks (from
:mod:`privtool.attacks.reference_store`) — and returns one score per point, higher meaning
"member" (ML Privacy Meter's habit: adding an attack never retrains a model).

* ``loss`` — Yeom et al. 2018: the target's loss alone, one global threshold.
* ``reference`` — MIA-R, Ye et al. 2022 attack R: member iff the target's loss on x is below
  c_α(x), the α-quantile of the reference models' losses on x; the ROC sweeps α.
* ``lira`` — Carlini et al. 2022: Gaussian fits of the logit-scaled confidence
  φ = log(p_y / (1 − p_y)) under models without x (offline: one-sided test) and with x
  (online: likelihood ratio), with one global variance per fit when models are few (§4.2).
* ``shokri`` — Shokri et al. 2017 as paper 1 §5.1 runs it: one LightGBM attack model per class
  on shadow models' prediction vectors, trained only on points the shadow model classifies
  correctly (Irolla & Châtel 2019).

The :class:`MembershipAttack` frame picks the evaluation set as paper 1 §5.2 does (D_in =
target training points, D_out = as many held-out test points, by index), asks the store for
signals, scores, and writes ``scores.npz``, ``plots/roc.csv`` and ``roc.png``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from privtool.attacks.audit import Roc, plot_roc, roc_rows, score_attack
from privtool.attacks.base import ATTACKS, Attack, Target
from privtool.attacks.signals import (  # noqa: F401  (re-exported for attacks and tests)
    _take_label,
    cross_entropy,
    log_softmax,
    scaled_logit,
)
from privtool.errors import PrivtoolError
from privtool.schema import Rule, settings, validate

# --------------------------------------------------------------------------- the attacks (pure)


def loss_scores(target_loss: np.ndarray) -> np.ndarray:
    """Yeom et al. 2018: lower loss = more likely a member."""
    return -np.asarray(target_loss, dtype=np.float64)


def reference_alpha(
    target_loss: np.ndarray, ref_loss: np.ndarray, ref_out: np.ndarray
) -> np.ndarray:
    """MIA-R's per-point α: the smallest α with ℓ_target(x) ≤ c_α(x), where c_α is the
    linearly interpolated α-quantile (numpy's default, as ML Privacy Meter) of the losses of
    the reference models that did not train on x (``ref_out`` (N, n) True).

    ``ref_loss`` is (N, n). Points with no reference loss get α = 0.5. The attack "member at
    level α" is exactly ``alpha ≤ α``, so sweeping α is sweeping a threshold on −alpha.
    """
    t = np.asarray(target_loss, dtype=np.float64)
    r = np.where(ref_out, np.asarray(ref_loss, dtype=np.float64), np.nan)
    alpha = np.full(t.shape, 0.5)
    counts = ref_out.sum(axis=0)
    for k in np.unique(counts):
        if k == 0:
            continue
        cols = np.flatnonzero(counts == k)
        vals = np.sort(r[:, cols], axis=0)[:k]  # (k, m), NaNs sorted last
        if k == 1:
            alpha[cols] = (t[cols] > vals[0]).astype(float)
            continue
        # the quantile q(α) interpolates the order statistics v at position α(k − 1); invert
        # it: v[b−1] < ℓ ≤ v[b] with b = #{v < ℓ} gives position
        # b − 1 + (ℓ − v[b−1]) / (v[b] − v[b−1]).
        x = t[cols]
        below = (vals < x).sum(axis=0)
        i = np.clip(below - 1, 0, k - 2)
        j = np.arange(len(cols))
        lo, hi = vals[i, j], vals[i + 1, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(hi > lo, (x - lo) / (hi - lo), 1.0)
        pos = np.where(below == 0, 0.0, i + np.clip(frac, 0.0, 1.0))
        alpha[cols] = pos / (k - 1)
    return alpha


def reference_scores(
    target_loss: np.ndarray, ref_loss: np.ndarray, ref_out: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """MIA-R scores (higher = member) and the per-point α they come from.

    The score is −α, nothing else: points tied in α (e.g. a target loss below every reference
    loss, α = 0) tie in score, so the ROC passes through a tie group on a straight segment and
    the AUC counts each member/non-member pair in it one half (Mann–Whitney), as Ye et al.'s
    attack — a threshold on α — does. Breaking such ties by the raw loss would mix in Yeom's
    attack, which is not MIA-R (and scored lower on mnist-5k: issue 17).
    """
    alpha = reference_alpha(target_loss, ref_loss, ref_out)
    return 0.0 - alpha, alpha


def _gauss_fit(
    phi: np.ndarray, mask: np.ndarray, global_var: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-point mean and std of ``phi`` (N, n) over models where ``mask`` (N, n) is True."""
    cnt = mask.sum(axis=0)
    mu = np.where(cnt > 0, np.where(mask, phi, 0).sum(axis=0) / np.maximum(cnt, 1), np.nan)
    dev = np.where(mask, phi - mu, 0.0) ** 2
    if global_var:
        var = np.full(phi.shape[1], dev.sum() / max(int(cnt.sum()) - int((cnt > 0).sum()), 1))
    else:
        var = dev.sum(axis=0) / np.maximum(cnt - 1, 1)
    return mu, np.sqrt(np.maximum(var, 1e-12))


def lira_offline(
    target_phi: np.ndarray, ref_phi: np.ndarray, ref_out: np.ndarray, *, global_var: bool = True
) -> np.ndarray:
    """Offline LiRA (Carlini et al. 2022, Alg. 1 offline): one-sided test of the target's φ
    against N(μ_out(x), σ_out²); the score (φ − μ_out)/σ_out is monotone in its p-value."""
    mu, sd = _gauss_fit(ref_phi, ref_out, global_var)
    z = (np.asarray(target_phi, float) - mu) / sd
    return np.nan_to_num(z, nan=0.0)


def lira_online(
    target_phi: np.ndarray, ref_phi: np.ndarray, ref_in: np.ndarray, *, global_var: bool = True
) -> np.ndarray:
    """Online LiRA (Carlini et al. 2022, Alg. 1): log N(φ; μ_in, σ_in²) − log N(φ; μ_out,
    σ_out²) from models trained with (``ref_in``) and without x."""
    mu_in, sd_in = _gauss_fit(ref_phi, ref_in, global_var)
    mu_out, sd_out = _gauss_fit(ref_phi, ~ref_in, global_var)
    t = np.asarray(target_phi, float)

    def logpdf(mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
        return -0.5 * ((t - mu) / sd) ** 2 - np.log(sd)

    return np.nan_to_num(logpdf(mu_in, sd_in) - logpdf(mu_out, sd_out), nan=0.0)


def shokri_scores(
    shadow_logits: np.ndarray,
    shadow_in: np.ndarray,
    shadow_labels: np.ndarray,
    target_logits: np.ndarray,
    target_labels: np.ndarray,
    n_classes: int,
    *,
    seed: int,
    n_estimators: int = 100,
    num_leaves: int = 15,
    learning_rate: float = 0.05,
    correct_only: bool = True,
) -> np.ndarray:
    """Shokri et al. 2017 with paper 1 §5.1's choices: one LightGBM attack model per class,
    fed the shadow models' prediction vectors (N models × P shadow points, label = member of
    that shadow model's training half), trained only on points that shadow model classifies
    correctly; each evaluation point is scored by its class's model on the target's
    prediction vector. A class without both labels scores 0.5."""
    import lightgbm as lgb

    prob = np.exp(log_softmax(shadow_logits))  # (N, P, C)
    correct = prob.argmax(-1) == shadow_labels[None, :]
    feats = prob.reshape(-1, prob.shape[-1])
    member = shadow_in.reshape(-1)
    label = np.broadcast_to(shadow_labels[None, :], shadow_in.shape).reshape(-1)
    keep = correct.reshape(-1) if correct_only else np.ones(member.shape, bool)
    target_prob = np.exp(log_softmax(target_logits))
    out = np.full(len(target_labels), 0.5)
    for c in range(n_classes):
        rows = keep & (label == c)
        test = np.flatnonzero(target_labels == c)
        if not test.size or len(np.unique(member[rows])) < 2:
            continue
        clf = lgb.LGBMClassifier(
            n_estimators=n_estimators,
            num_leaves=num_leaves,
            learning_rate=learning_rate,
            random_state=seed + c,
            n_jobs=1,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
        clf.fit(feats[rows], member[rows].astype(int))
        out[test] = clf.predict_proba(target_prob[test])[:, 1]
    return out


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
    if target.mechanism == "none" or not fields:
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

    def scores(self, signals: dict[str, Any]) -> dict[str, np.ndarray]:
        """Variant name -> scores (higher = member), the first being the headline one."""
        raise NotImplementedError

    def extra_metrics(
        self, signals: dict[str, Any], scores: dict[str, np.ndarray], member: np.ndarray
    ) -> dict[str, Any]:
        """Attack-specific numbers, scored against the membership labels."""
        return {}

    def more_signals(
        self, target: Target, signals: dict[str, Any], progress: Any = None
    ) -> dict[str, Any]:
        """Signals beyond the target's plain logits and the store (augmented queries, the
        target on population points), computed once the store exists."""
        return {}

    def run(self, target: Target, out: Path, progress: Any = None) -> dict[str, Any]:
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
        metrics: dict[str, Any] = {}
        for i, (variant, s) in enumerate(scores.items()):
            m, roc = score_attack(
                s, member, confidence=cfg.confidence, delta=cfg.delta, sides=cfg.epsilon_sides
            )
            curves[variant] = roc
            if i == 0:
                metrics.update(m)
            if len(scores) > 1:
                metrics.update(
                    {
                        f"{variant}_{k}": v
                        for k, v in m.items()
                        if not k.startswith("n_")
                        and not k.endswith(("_confidence", "_delta", "_sides"))
                    }
                )
        metrics.update(self.extra_metrics(signals, scores, member))
        tr_loss = signals["loss"][member]
        te_loss = signals["loss"][~member]
        pred = logits.argmax(1) == labels
        metrics.update(
            {
                "eval_train_accuracy": float(pred[member].mean()),
                "eval_test_accuracy": float(pred[~member].mean()),
                "eval_train_loss": float(tr_loss.mean()),
                "eval_test_loss": float(te_loss.mean()),
                "seed": cfg.seed,
                "seconds": round(seconds, 3),
                **info,
            }
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

        metrics.update(
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
        return metrics


@dataclass(frozen=True)
class LossOptions(MembershipOptions):
    section: ClassVar[str] = "attack.loss"


@ATTACKS.register("loss")
class LossAttack(MembershipAttack):
    """Yeom et al. 2018 loss threshold; needs no reference models. Also reports the accuracy
    at Yeom's own threshold, the target's mean training loss."""

    name = "loss"
    Options = LossOptions
    role = None

    def scores(self, signals: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"loss": loss_scores(signals["loss"])}

    def extra_metrics(
        self, signals: dict[str, Any], scores: dict[str, np.ndarray], member: np.ndarray
    ) -> dict[str, Any]:
        thr = signals["train_loss"]
        if thr is None or not math.isfinite(thr):
            return {}
        guess = signals["loss"] <= thr
        m = member
        return {
            "yeom_threshold": float(thr),
            "yeom_accuracy": float(0.5 * (guess[m].mean() + (~guess[~m]).mean())),
        }


@dataclass(frozen=True)
class ReferenceOptions(MembershipOptions):
    section: ClassVar[str] = "attack.reference"


@ATTACKS.register("reference")
class ReferenceAttack(MembershipAttack):
    """MIA-R (Ye et al. 2022, attack R) with N non-DP reference models (paper 1 §5.2)."""

    name = "reference"
    Options = ReferenceOptions
    role = "reference"

    def scores(self, signals: dict[str, Any]) -> dict[str, np.ndarray]:
        ref = signals["store"].signals_for(signals["index"], kind="offline")
        ref_loss = cross_entropy(ref["logits"], signals["labels"])
        score, alpha = reference_scores(signals["loss"], ref_loss, ~ref["in"])
        signals["extra_alpha"] = alpha
        return {"reference": score}


@dataclass(frozen=True)
class LiraOptions(MembershipOptions):
    global_variance: bool = True  # one σ per fit (Carlini et al. 2022 §4.2, for few models)

    section: ClassVar[str] = "attack.lira"


@ATTACKS.register("lira")
class LiraAttack(MembershipAttack):
    """LiRA online (headline metrics) and offline (``offline_*``), Carlini et al. 2022.
    Offline uses the store's offline models (never saw any evaluation point); online uses
    models trained on random halves of the target's train ∪ test splits, so each evaluation
    point is in exactly half of them (for an even ``attack.n_models``)."""

    name = "lira"
    Options = LiraOptions
    role = "reference"
    online = True

    def more_signals(
        self, target: Target, signals: dict[str, Any], progress: Any = None
    ) -> dict[str, Any]:
        if self.cfg.augment == "none":
            return {}
        from privtool.attacks.queries import query_logits, store_query_logits

        return {
            "query_logits": query_logits(
                target.build_model(),
                target.data.x,
                signals["index"],
                self.cfg.augment,
                target.device,
            ),
            "store_queries": store_query_logits(
                signals["store"],
                target,
                self.cfg.augment,
                build=not self.cfg.store,
                progress=progress,
            ),
        }

    def scores(self, signals: dict[str, Any]) -> dict[str, np.ndarray]:
        store, idx, y = signals["store"], signals["index"], signals["labels"]
        if "query_logits" in signals:
            return lira_queries(signals, self.options.global_variance)
        phi = scaled_logit(signals["logits"], y)
        off = store.signals_for(idx, kind="offline")
        on = store.signals_for(idx, kind="online")
        gv = self.options.global_variance
        return {
            "online": lira_online(phi, scaled_logit(on["logits"], y), on["in"], global_var=gv),
            "offline": lira_offline(phi, scaled_logit(off["logits"], y), ~off["in"], global_var=gv),
        }

    def extra_metrics(
        self, signals: dict[str, Any], scores: dict[str, np.ndarray], member: np.ndarray
    ) -> dict[str, Any]:
        return {
            "augment": self.cfg.augment,
            "n_queries": int(signals["query_logits"].shape[0]) if "query_logits" in signals else 1,
        }


def lira_queries(signals: dict[str, Any], global_var: bool) -> dict[str, np.ndarray]:
    """LiRA over augmented queries (Carlini et al. 2022 §VI-A): one Gaussian fit per query, the
    per-query scores averaged (their code's ``score.mean(1)``)."""
    store, idx, y = signals["store"], signals["index"], signals["labels"]
    pos = store.positions(idx)
    phi = scaled_logit(signals["query_logits"], y)  # (Q, n)
    out: dict[str, np.ndarray] = {}
    for kind in ("online", "offline"):
        ref = scaled_logit(signals["store_queries"][kind][:, :, pos], y)  # (N, Q, n)
        mask = store.signals_for(idx, kind=kind)["in"]
        per_query = [
            lira_online(phi[q], ref[:, q], mask, global_var=global_var)
            if kind == "online"
            else lira_offline(phi[q], ref[:, q], ~mask, global_var=global_var)
            for q in range(phi.shape[0])
        ]
        out[kind] = np.mean(per_query, axis=0)
    return out


@settings(
    shadow=Rule(choices=("target", "reference")),
    n_estimators=Rule(ge=1),
    num_leaves=Rule(ge=2),
    learning_rate=Rule(gt=0, le=1),
)
@dataclass(frozen=True)
class ShokriOptions(MembershipOptions):
    shadow: str = "target"  # target: shadow models use the target's own recipe (DP
    #                                 included); reference: the non-DP version
    n_estimators: int = 100  # LightGBM attack model per class
    num_leaves: int = 15
    learning_rate: float = 0.05
    correct_only: bool = True  # train attack models on correctly classified points only

    section: ClassVar[str] = "attack.shokri"


@ATTACKS.register("shokri")
class ShokriAttack(MembershipAttack):
    """Shokri et al. 2017 shadow-model attack with LightGBM (paper 1 §5.1). Also reports the
    attack models' own accuracy at their 0.5 decision (paper 1 Table 1's "attack acc.")."""

    name = "shokri"
    Options = ShokriOptions

    def store_role(self) -> str | None:
        return "shadow" if self.options.shadow == "target" else "reference"

    def scores(self, signals: dict[str, Any]) -> dict[str, np.ndarray]:
        store = signals["store"]
        sh = store.shadow_signals()
        o = self.options
        return {
            "shokri": shokri_scores(
                sh["logits"],
                sh["in"],
                sh["labels"],
                signals["logits"],
                signals["labels"],
                signals["n_classes"],
                seed=self.cfg.seed,
                n_estimators=o.n_estimators,
                num_leaves=o.num_leaves,
                learning_rate=o.learning_rate,
                correct_only=o.correct_only,
            )
        }

    def extra_metrics(
        self, signals: dict[str, Any], scores: dict[str, np.ndarray], member: np.ndarray
    ) -> dict[str, Any]:
        m, s = member, scores["shokri"]
        return {"attack_accuracy": float(0.5 * ((s[m] > 0.5).mean() + (s[~m] <= 0.5).mean()))}
