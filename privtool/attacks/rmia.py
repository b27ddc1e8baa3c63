"""RMIA, the robust membership inference attack (Zarifzadeh, Liu, Shokri & Shokri, ICML 2024),
offline and online, as pure functions of the reference store's saved signals.

The attack compares the target's probability of the true class on x with the same on population
points z the target surely did not train on, each normalised by its probability under
reference models:

    LR(x, z) = [Pr(x|θ) / Pr(x)] / [Pr(z|θ) / Pr(z)],      Score(x) = Pr_z[ LR(x, z) ≥ γ ]

(paper eqs. 3–4). Pr(·|θ) is the softmax of the logits divided by a temperature T, taken at the
true class. Pr(x) averages Pr(x|θ_ref) over reference models:

* **online** — over models of which half trained on x (the store's ``online`` set, random halves
  of train ∪ test): Pr(x) = mean over all of them;
* **offline** — over models that never saw x (the ``offline`` set, halves of the shadow pool),
  corrected for the missing IN models by the paper's linear approximation
  Pr(x) = ((1 + a)/2)·Pr_OUT(x) + (1 − a)/2 (§4.2), ``a`` tuned on the reference models
  themselves.

Choices where the paper leaves room, following ML Privacy Meter (privacytrustlab/
ml_privacy_meter, ``modules/mia/attacks/rmia.py``: ``get_out_ref_signals``, ``run_rmia``,
``tune_offline_a``):

* population z = the shadow split: points the target never trained on and the attacker holds
  (never an evaluation point, whose membership the attacker does not know). Offline, Pr(z) is
  formed like Pr(x) from the offline models for which z is OUT; online, from all offline
  models, of which half trained on z — the same IN/OUT balance as Pr(x) over the online models.
* ``a`` is chosen from the grid 0, 0.1, …, 1 by the AUC of RMIA-offline attacking each offline
  model with the others but its complementary twin as references (Privacy Meter attacks one
  paired model with one reference; averaging over every model is less noisy), members = its
  half of the shadow pool. It needs at least 4 offline models; with fewer, a = 0.3 (the
  paper's default) and ``offline_a_tuned`` is false.
* with augmented queries (``attack.augment``) the score is the mean over queries of
  Pr_z[LR_q(x, z) ≥ γ], x and z seen through the same query q.

For a fixed population, Score(x) is a non-decreasing function of Pr(x|θ)/Pr(x) alone, so the
population and γ only set how finely the score resolves; equal inputs get equal scores (no
tie is broken by position) and the ROC counts a tie as one step (:mod:`privtool.attacks.audit`).
The score is computed with one sort of the population per query, O((n + m) log m), not the
n × m matrix of pairwise ratios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from privtool.attacks.base import ATTACKS, Target
from privtool.attacks.membership import MembershipAttack, MembershipOptions
from privtool.attacks.signals import log_softmax
from privtool.errors import PrivtoolError
from privtool.schema import Rule, settings

A_GRID = tuple(round(0.1 * i, 1) for i in range(11))
DEFAULT_A = 0.3
_TINY = 1e-300


# --------------------------------------------------------------------------- pure maths


def true_class_log_prob(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> np.ndarray:
    """log softmax(logits / T)_y: (..., n, C), (n,) -> (..., n), float64."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    lab = np.broadcast_to(np.asarray(labels)[..., None], z.shape[:-1] + (1,))
    return np.take_along_axis(log_softmax(z), lab, axis=-1)[..., 0]


def offline_log_ratio(
    logp_target: np.ndarray, logp_ref: np.ndarray, ref_out: np.ndarray, a: float
) -> np.ndarray:
    """log Pr(x|θ)/Pr(x) with Pr(x) = ((1+a)/2)·mean_OUT Pr(x|θ_ref) + (1−a)/2.

    ``logp_target`` (Q, n), ``logp_ref`` (N, Q, n), ``ref_out`` (N, n) True where the reference
    model did not train on the point. NaN for points with no OUT model."""
    out = np.asarray(ref_out, bool)[:, None, :]
    cnt = out.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_out = np.where(out, np.exp(logp_ref), 0.0).sum(axis=0) / cnt
    p = (1 + a) / 2 * mean_out + (1 - a) / 2
    return np.asarray(logp_target, np.float64) - np.log(np.maximum(p, _TINY))


def online_log_ratio(logp_target: np.ndarray, logp_ref: np.ndarray) -> np.ndarray:
    """log Pr(x|θ)/Pr(x) with Pr(x) the mean of Pr(x|θ_ref) over all reference models (IN and
    OUT): ``logp_target`` (Q, n), ``logp_ref`` (N, Q, n)."""
    p = np.exp(np.asarray(logp_ref, np.float64)).mean(axis=0)
    return np.asarray(logp_target, np.float64) - np.log(np.maximum(p, _TINY))


def rmia_scores(log_ratio_x: np.ndarray, log_ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """Score(x) = mean over queries q of Pr_z[ LR_q(x, z) ≥ γ ] (Zarifzadeh et al. 2024, eq. 4).

    ``log_ratio_x`` (Q, n) and ``log_ratio_z`` (Q, m) are log Pr(·|θ)/Pr(·); LR ≥ γ is
    log r_z ≤ log r_x − log γ, counted with a sorted population. Non-finite z are left out;
    a non-finite x scores 0."""
    lx = np.atleast_2d(np.asarray(log_ratio_x, np.float64))
    lz = np.atleast_2d(np.asarray(log_ratio_z, np.float64))
    if lx.shape[0] != lz.shape[0]:
        raise ValueError("x and z need the same queries")
    out = np.zeros(lx.shape[1])
    for q in range(lx.shape[0]):
        z = np.sort(lz[q][np.isfinite(lz[q])])
        if not z.size:
            raise PrivtoolError("RMIA has no usable population point (every Pr(z) undefined)")
        out += np.searchsorted(z, lx[q] - np.log(gamma), side="right") / z.size
    out /= lx.shape[0]
    return np.where(np.isfinite(lx).all(axis=0), out, 0.0)


def tune_offline_a(
    logp_pool: np.ndarray,
    in_pool: np.ndarray,
    logp_pop: np.ndarray,
    gamma: float,
    grid: tuple[float, ...] = A_GRID,
) -> tuple[float, dict[float, float]]:
    """Pick RMIA-offline's ``a`` by attacking the reference models themselves.

    ``logp_pool`` (N, Q, S): the offline models' log Pr on their training pool, ``in_pool``
    (N, S) their membership; ``logp_pop`` (N, Q, M): on points none of them trained on (the
    population). Each model m is attacked with every other model but its complementary twin
    (m xor 1) as reference; the ``a`` of the best mean AUC wins (the smallest on a tie).
    Returns (a, {a: mean AUC})."""
    from privtool.attacks.audit import auc, roc_curve

    n = logp_pool.shape[0]
    if n < 4:
        raise PrivtoolError(
            f"tuning RMIA's offline a needs at least 4 offline models, the "
            f"store has {n}; set attack.rmia.offline_a to a number"
        )
    aucs: dict[float, float] = {}
    for a in grid:
        vals = []
        for m in range(n):
            refs = [i for i in range(n) if i not in (m, m ^ 1)]
            lx = offline_log_ratio(logp_pool[m], logp_pool[refs], ~in_pool[refs], a)
            keep = np.isfinite(lx).all(axis=0)
            member = in_pool[m][keep]
            if member.all() or not member.any():
                continue
            lz = offline_log_ratio(
                logp_pop[m], logp_pop[refs], np.ones((len(refs), logp_pop.shape[-1]), bool), a
            )
            vals.append(auc(roc_curve(rmia_scores(lx[:, keep], lz, gamma), member)))
        aucs[a] = float(np.mean(vals)) if vals else float("nan")
    finite = {k: v for k, v in aucs.items() if np.isfinite(v)}
    if not finite:
        raise PrivtoolError(
            "tuning RMIA's offline a found no model to attack; set "
            "attack.rmia.offline_a to a number"
        )
    best = max(finite.values())
    return min(k for k, v in finite.items() if v == best), aucs


# --------------------------------------------------------------------------- the attack


def _a(v: Any) -> bool:
    return v == "tune" or (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and bool(np.isfinite(v))
        and 0 <= v <= 1
    )


@settings(
    gamma=Rule(gt=0),
    temperature=Rule(gt=0),
    offline_a=Rule(check=_a, allowed="a number in [0, 1] or tune"),
)
@dataclass(frozen=True)
class RmiaOptions(MembershipOptions):
    gamma: float = 2.0  # γ: LR(x, z) ≥ γ counts z as dominated (paper's default 2)
    offline_a: Any = "tune"  # a in [0, 1], or tune (grid over [0, 1] on the store)
    temperature: float = 1.0  # T of softmax(logits / T) (paper's "temperature")
    online: bool = True  # also RMIA-online (needs the store's online models)

    section: ClassVar[str] = "attack.rmia"


@ATTACKS.register("rmia")
class RmiaAttack(MembershipAttack):
    """RMIA online (headline metrics, when ``attack.rmia.online``) and offline (``offline_*``)
    over the non-DP reference store; trains nothing when the store exists."""

    name = "rmia"
    Options = RmiaOptions
    role = "reference"

    def __init__(self, cfg: Any, options: Any = None) -> None:
        super().__init__(cfg, options)
        self.online = self.options.online

    def check(self, target: Target) -> None:
        super().check(target)
        if self.cfg.n_models < 2:
            raise PrivtoolError(
                f"attack.n_models={self.cfg.n_models} is too few for RMIA: "
                f"every population point needs a reference model without it; "
                f"use at least 2"
            )

    def more_signals(
        self, target: Target, signals: dict[str, Any], progress: Any = None
    ) -> dict[str, Any]:
        from privtool.attacks.queries import query_logits, query_warnings, store_query_logits

        store, aug = signals["store"], self.cfg.augment
        model = target.build_model()
        pop = store.shadow
        return {
            "warnings": query_warnings(target, aug),
            "query_logits": query_logits(
                model, target.data.x, signals["index"], aug, target.device
            ),
            "population": pop,
            "population_logits": query_logits(model, target.data.x, pop, aug, target.device),
            "store_queries": store_query_logits(
                store, target, aug, build=not self.cfg.store, progress=progress
            ),
        }

    def scores(self, signals: dict[str, Any]) -> dict[str, np.ndarray]:
        o, store = self.options, signals["store"]
        t, y = o.temperature, signals["labels"]
        idx, pop = signals["index"], signals["population"]
        y_pop = store.labels[store.positions(pop)]
        sq = signals["store_queries"]
        pos_x, pos_z = store.positions(idx), store.positions(pop)

        def ref(kind: str, pos: np.ndarray, lab: np.ndarray) -> np.ndarray:
            return true_class_log_prob(sq[kind][:, :, pos], lab, t)  # (N, Q, n)

        lp_x = true_class_log_prob(signals["query_logits"], y, t)  # (Q, n)
        lp_z = true_class_log_prob(signals["population_logits"], y_pop, t)
        off_x, off_z = ref("offline", pos_x, y), ref("offline", pos_z, y_pop)
        in_x = store.signals_for(idx, kind="offline")["in"]
        in_z = store.signals_for(pop, kind="offline")["in"]

        a, tuned = o.offline_a, False
        if a == "tune":
            if off_z.shape[0] >= 4:
                a, table = tune_offline_a(off_z, in_z, off_x, o.gamma)
                tuned = True
                signals["rmia_a_auc"] = table
            else:
                a = DEFAULT_A
        signals["rmia_a"], signals["rmia_a_tuned"] = float(a), tuned
        g = o.gamma
        offline = rmia_scores(
            offline_log_ratio(lp_x, off_x, ~in_x, a), offline_log_ratio(lp_z, off_z, ~in_z, a), g
        )
        if not self.online:
            return {"offline": offline}
        on_x = ref("online", pos_x, y)
        online = rmia_scores(online_log_ratio(lp_x, on_x), online_log_ratio(lp_z, off_z), g)
        return {"online": online, "offline": offline}

    def extra_metrics(
        self, signals: dict[str, Any], scores: dict[str, np.ndarray], member: np.ndarray
    ) -> dict[str, Any]:
        o = self.options
        out = {
            "offline_a": signals["rmia_a"],
            "offline_a_tuned": signals["rmia_a_tuned"],
            "gamma": float(o.gamma),
            "temperature": float(o.temperature),
            "augment": self.cfg.augment,
            "n_queries": int(signals["query_logits"].shape[0]),
            "n_population": len(signals["population"]),
        }
        if "rmia_a_auc" in signals:
            out["offline_a_auc"] = {
                f"{k:.1f}": round(v, 6) for k, v in signals["rmia_a_auc"].items()
            }
        return out
