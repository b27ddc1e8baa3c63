"""The registered membership attacks ``loss``, ``reference`` (MIA-R), ``lira`` and ``shokri``
(paper 1 §5.1–5.2; SPEC §6): each says which store it needs and maps the frame's signals
(:class:`~privtool.attacks.membership.MembershipAttack`) to scores with the pure functions of
:mod:`privtool.attacks.mia_scores`. RMIA lives in :mod:`privtool.attacks.rmia`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from privtool.attacks.base import ATTACKS, Target
from privtool.attacks.membership import MembershipAttack, MembershipOptions
from privtool.attacks.mia_scores import (
    lira_offline,
    lira_online,
    lira_queries,
    loss_scores,
    reference_scores,
    shokri_scores,
)
from privtool.attacks.signals import cross_entropy, scaled_logit
from privtool.schema import Rule, settings


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
        from privtool.attacks.queries import query_logits, query_warnings, store_query_logits

        return {
            "warnings": query_warnings(target, self.cfg.augment),
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
