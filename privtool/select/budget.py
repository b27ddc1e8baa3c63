"""Privacy budget of a selection run: basic composition and the choice of parent checkpoint.

Paper 2 §3: DiversePublic and the uncertainty baselines only post-process the DP model on public
data, so the fine-tuned model keeps the parent's (ε_dp, δ); NearPrivate also releases a DP-PCA
(ε_dpPCA, δ_dpPCA) and noisy support counts (ε_support, 0) of the private training data, and by
basic composition (Dwork & Roth 2014, Thm. 3.16) the whole is (ε_dp + ε_dpPCA + ε_support,
δ_dp + δ_dpPCA). Composition needs one neighbouring relation: the parent's record-level one
(``Mechanism.record_relation``: add/remove for Gaussian DP-SGD and for class/subclass runs'
record-level guarantee, replace-one for VMF), which also sets the sensitivities of the two new
releases (:mod:`privtool.select.dp_pca`); the parent's (ε, δ) is its ``Mechanism.select_cost``.

Paper 2 §5.2 / Fig. 5c split a total ε_limit into ε_dp (which checkpoint), ε_dpPCA (small, 0.3)
and ε_support; :func:`choose_parent` takes the latest checkpoint whose composed ε fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from privtool.errors import PrivtoolError

BASIC = (
    "basic composition (Dwork & Roth 2014, Thm. 3.16): epsilon = sum of the epsilons, "
    "delta = sum of the deltas, all under one neighbouring relation"
)


@dataclass(frozen=True)
class Cost:
    """One (ε, δ) release in the composition; ``epsilon`` None means ∞ (not private)."""

    name: str
    epsilon: float | None
    delta: float
    relation: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "relation": self.relation,
        }


def compose(costs: Sequence[Cost]) -> tuple[float | None, float]:
    """Basic composition: (Σε, Σδ); ε is None (∞) if any part is."""
    relations = {c.relation for c in costs if c.epsilon is not None and c.epsilon > 0}
    if len(relations) > 1:
        raise PrivtoolError(
            f"cannot compose guarantees under different neighbouring relations: "
            f"{', '.join(sorted(relations))}"
        )
    delta = float(sum(c.delta for c in costs))
    if any(c.epsilon is None or not math.isfinite(c.epsilon) for c in costs):
        return None, delta
    return float(sum(c.epsilon for c in costs)), delta


def _mechanism(name: str) -> Any:
    from privtool.mechanisms import MECHANISMS

    if name not in MECHANISMS:
        raise PrivtoolError(
            f"privtool select does not know the privacy guarantee of mechanism "
            f"{name!r}; known: {', '.join(MECHANISMS.names())}"
        )
    return MECHANISMS.get(name)


def record_relation(mechanism: str) -> str:
    """The neighbouring relation of ``mechanism``'s record-level guarantee."""
    return _mechanism(mechanism).record_relation


def parent_cost(
    mechanism: str, privacy: Mapping[str, Any], metrics: Mapping[str, Any], *, record_level: bool
) -> Cost:
    """The parent checkpoint's guarantee as a :class:`Cost` (``Mechanism.select_cost``).

    ``record_level`` False: the mechanism's own headline (per class for ``class``);
    True: per record, as composing with releases about single records needs (class/subclass
    runs: ``epsilon_record``, group privacy over the unit).
    """
    eps, delta, relation = _mechanism(mechanism).select_cost(
        privacy, metrics, record_level=record_level
    )
    return Cost("parent DP training", eps, delta, relation)


@dataclass(frozen=True)
class Candidate:
    """A parent the selection may start from: ``spec`` is RUN or RUN@EPOCH."""

    spec: str
    epoch: int | None
    privacy: Mapping[str, Any]


@dataclass(frozen=True)
class Plan:
    """The chosen parent and the composed guarantee of the run it leads to."""

    candidate: Candidate
    parent: Cost
    extra: tuple[Cost, ...]
    epsilon: float | None
    delta: float
    limit: float | None

    def record(self) -> dict[str, Any]:
        return {
            "composition": BASIC,
            "parts": [self.parent.as_dict(), *(c.as_dict() for c in self.extra)],
            "epsilon": self.epsilon,
            "delta": self.delta,
            "epsilon_limit": self.limit,
            "parent": self.candidate.spec,
        }


def _fmt(e: float | None) -> str:
    return "inf" if e is None else f"{e:.4g}"


def choose_parent(
    candidates: Sequence[Candidate],
    *,
    mechanism: str,
    metrics: Mapping[str, Any],
    extra: Sequence[Cost],
    limit: float | None,
    pinned: bool,
    what: str,
) -> Plan:
    """The latest candidate (by epoch) whose composed ε is at most ``limit`` (any when
    ``limit`` is None). ``pinned``: the user named the checkpoint, so it is used or refused.
    ``extra`` are the strategy's own releases; ``what`` names them in messages."""
    record_level = any(c.epsilon for c in extra)
    plans = []
    for cand in candidates:
        parent = parent_cost(mechanism, cand.privacy, metrics, record_level=record_level)
        eps, delta = compose([parent, *extra])
        plans.append(Plan(cand, parent, tuple(extra), eps, delta, limit))
    if not plans:
        raise PrivtoolError("the target run has no model to start from; re-run `privtool train`")
    if limit is None:
        return plans[-1]
    fits = [p for p in plans if p.epsilon is not None and p.epsilon <= limit * (1 + 1e-12)]
    if fits:
        return fits[-1]
    first = plans[0] if not pinned else plans[-1]
    if first.parent.epsilon is None:
        why = (
            "has no DP guarantee (" + str(metrics.get("dp_guarantee_reason")) + ")"
            if metrics.get("dp_guarantee") == "none"
            else f"is not private (mechanism {mechanism}, epsilon inf)"
        )
        raise PrivtoolError(
            f"--epsilon-limit {limit:g} cannot hold: {first.candidate.spec} "
            f"{why}; drop --epsilon-limit or select from a DP run"
        )
    where = (
        f"{first.candidate.spec} (epsilon_dp {_fmt(first.parent.epsilon)})"
        if pinned or len(plans) == 1
        else f"even the earliest checkpoint, {first.candidate.spec} (epsilon_dp "
        f"{_fmt(first.parent.epsilon)}),"
    )
    fix = (
        "train with more noise or keep earlier checkpoints (train.checkpoint_every=1)"
        if not pinned
        else "pick an earlier checkpoint (RUN@EPOCH) or drop @ to let --epsilon-limit choose one"
    )
    raise PrivtoolError(
        f"--epsilon-limit {limit:g} is too small: {where} plus {what} composes "
        f"to epsilon {_fmt(first.epsilon)}; raise the limit or {fix}"
    )
