"""Attack results as objects: one frozen dataclass per attack family (issue 18, Deliver 4).

An attack's ``run`` returns a :class:`MembershipResult`, :class:`ReconstructionResult` or
:class:`InversionResult`; the attack stage adds the attack's name and the target's description
(:meth:`AttackResult.for_target`) and writes :meth:`AttackResult.to_json` as the attack
directory's ``metrics.json`` (the same object ``privtool attack --json`` prints). Calibration
reads stored results back with :func:`from_json` and uses the objects' attributes. The module
imports neither torch nor an attack, so reading results costs nothing (it sits beside, not in,
:mod:`privtool.attacks`, whose package registers every attack on import).

The JSON is the CLI contract (SPEC §1) and what stored results hold, so the objects are a
typed view of it, not a new format: ``from_json(d).to_json() == d`` for every result privtool
wrote, old ones included. Keys this version does not type (a newer attack's extra numbers, an
older store's fields) are kept in ``extra`` and written back unchanged. A typed field that is
None is not written, except the few that a result states as null (an ε bound's unbounded
upper end, a views table without a scored class).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from privtool.errors import PrivtoolError

#: the low false-positive rates every membership result reports TPR at (key -> FPR level);
#: Carlini et al. 2022 ask for TPR at 0.1 % FPR
LOW_FPRS = {"tpr_at_0.1pct_fpr": 0.001, "tpr_at_1pct_fpr": 0.01}
TARGET = "target_"
#: JSON key suffix of each low-FPR level (``tpr_at_<suffix>``, ``records_exposed_at_<suffix>``)
LEVELS = {k[len("tpr_at_") :]: f for k, f in LOW_FPRS.items()}
#: keys a membership attack's variant copy leaves to the headline scores
_SHARED = ("n_in", "n_out")


def _plain(cls: type, d: dict[str, Any], prefix: str = "", skip: tuple[str, ...] = ()) -> dict:
    """Pop the flat fields of dataclass ``cls`` (JSON key = prefix + field name) out of ``d``."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("nested") or f.name in skip:
            continue
        if prefix + f.name in d:
            out[f.name] = d.pop(prefix + f.name)
    return out


def _write_plain(obj: Any, prefix: str = "", skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The flat fields of ``obj`` that are set, as JSON keys prefix + field name."""
    return {
        prefix + f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if not f.metadata.get("nested") and f.name not in skip and getattr(obj, f.name) is not None
    }


def nested(default: Any = None, factory: Any = None) -> Any:
    """A field (de)serialised by its class's own code, not as one flat key."""
    if factory is not None:
        return field(default_factory=factory, metadata={"nested": True})
    return field(default=default, metadata={"nested": True})


# ------------------------------------------------------------------------------------- base


@dataclass(frozen=True)
class AttackResult:
    """What every attack result holds: the attack, its target's description (the target run's
    ``target_*`` fields, here without the prefix: mechanism, ε fields, dataset, model,
    accuracies, epoch), the wall time, and keys this version does not type."""

    kind: ClassVar[str]

    attack: str | None = nested()  # set by the stage (for_target)
    target: Mapping[str, Any] = nested(factory=dict)
    seconds: float | None = None
    extra: Mapping[str, Any] = nested(factory=dict)

    def for_target(self, attack: str, described: Mapping[str, Any]) -> AttackResult:
        """This result named ``attack`` with the target's ``Target.describe()`` fields."""
        target = {k[len(TARGET) :]: v for k, v in described.items() if k.startswith(TARGET)}
        return dataclasses.replace(self, attack=attack, target=target)

    def _body(self) -> dict[str, Any]:
        """The family's own keys (subclasses)."""
        return _write_plain(self)

    def to_json(self) -> dict[str, Any]:
        """The metrics dict as ``metrics.json`` and ``--json`` carry it."""
        out: dict[str, Any] = {}
        if self.attack is not None:
            out.update(attack=self.attack, kind=self.kind)
        out.update({TARGET + k: v for k, v in self.target.items()})
        out.update(self._body())
        out.update(self.extra)
        return out

    @classmethod
    def _parse(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Pop the family's keys out of ``d`` into constructor arguments (subclasses)."""
        return _plain(cls, d)

    @classmethod
    def from_json(cls, metrics: Mapping[str, Any]) -> AttackResult:
        """The result of a metrics dict; on :class:`AttackResult` itself, of the family its
        ``kind`` names."""
        if cls is AttackResult:
            kind = metrics.get("kind")
            if kind not in RESULTS:
                raise PrivtoolError(
                    f"attack result kind {kind!r} is not one of {', '.join(RESULTS)}"
                )
            return RESULTS[kind].from_json(metrics)
        d = dict(metrics)
        attack = d.pop("attack", None)
        if attack is not None:
            d.pop("kind", None)
        target = {k[len(TARGET) :]: d.pop(k) for k in list(d) if k.startswith(TARGET)}
        kwargs = cls._parse(d)
        return cls(attack=attack, target=target, extra=d, **kwargs)


def from_json(metrics: Mapping[str, Any]) -> AttackResult:
    """A stored attack result (``metrics.json``) as the object of its family."""
    return AttackResult.from_json(metrics)


# ------------------------------------------------------------------------------- membership


@dataclass(frozen=True)
class EpsilonLowerBound:
    """The empirical ε lower bound of :func:`privtool.attacks.audit.epsilon_lower_bound`
    (keys ``epsilon_lower_bound`` and ``epsilon_lower_bound_<field>``)."""

    value: float | None = None
    point: float | None = None  # null: unbounded
    ci_high: float | None = None  # null: unbounded
    fpr: float | None = None
    tpr: float | None = None
    confidence: float | None = None
    delta: float | None = None
    sides: str | None = None
    direction: str | None = None

    KEY: ClassVar[str] = "epsilon_lower_bound"
    NULLABLE: ClassVar[tuple[str, ...]] = ("point", "ci_high")
    #: the same for every variant of one attack: written once, unprefixed
    SHARED: ClassVar[tuple[str, ...]] = ("confidence", "delta", "sides")

    @staticmethod
    def _key(name: str, prefix: str) -> str:
        return prefix + EpsilonLowerBound.KEY + ("" if name == "value" else f"_{name}")

    def to_json(self, prefix: str = "", shared: bool = True) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not shared and f.name in self.SHARED:
                continue
            if v is not None or (f.name in self.NULLABLE and self.value is not None):
                out[self._key(f.name, prefix)] = v
        return out

    @classmethod
    def parse(cls, d: dict[str, Any], prefix: str = "") -> EpsilonLowerBound:
        return cls(
            **{
                f.name: d.pop(cls._key(f.name, prefix))
                for f in dataclasses.fields(cls)
                if cls._key(f.name, prefix) in d
            }
        )


@dataclass(frozen=True)
class RocScores:
    """Every number SPEC §6 asks of one membership score (:func:`~privtool.attacks.audit.
    score_attack`): AUC, best balanced accuracy, TPR at the low FPRs (by level, e.g. 0.001),
    the empirical ε lower bound, and the evaluation set's members and non-members."""

    auc: float | None = None
    balanced_accuracy: float | None = None
    tpr_at_fpr: Mapping[float, float] = nested(factory=dict)
    epsilon: EpsilonLowerBound = nested(factory=EpsilonLowerBound)
    n_in: int | None = None
    n_out: int | None = None

    def tpr_at(self, fpr: float) -> float | None:
        """The TPR at FPR ``fpr`` (one of :data:`LEVELS`' values), None if not reported."""
        return self.tpr_at_fpr.get(fpr)

    def to_json(self, prefix: str = "", shared: bool = True) -> dict[str, Any]:
        skip = () if shared else _SHARED
        out = _write_plain(self, prefix, skip)
        out.update(
            {
                f"{prefix}tpr_at_{s}": self.tpr_at_fpr[f]
                for s, f in LEVELS.items()
                if self.tpr_at_fpr.get(f) is not None
            }
        )
        out.update(self.epsilon.to_json(prefix, shared))
        return out

    @classmethod
    def parse(cls, d: dict[str, Any], prefix: str = "", shared: bool = True) -> RocScores:
        kw = _plain(cls, d, prefix, () if shared else _SHARED)
        tpr = {
            f: d.pop(f"{prefix}tpr_at_{s}") for s, f in LEVELS.items() if f"{prefix}tpr_at_{s}" in d
        }
        return cls(tpr_at_fpr=tpr, epsilon=EpsilonLowerBound.parse(d, prefix), **kw)

    def sharing(self, headline: RocScores) -> RocScores:
        """This variant with the headline's counts and ε settings (the keys a variant's JSON
        leaves to the headline)."""
        eps = {k: getattr(headline.epsilon, k) for k in EpsilonLowerBound.SHARED}
        return dataclasses.replace(
            self,
            n_in=headline.n_in,
            n_out=headline.n_out,
            epsilon=dataclasses.replace(self.epsilon, **eps),
        )

    @classmethod
    def from_scored(cls, scored: Mapping[str, Any]) -> RocScores:
        """From :func:`~privtool.attacks.audit.score_attack`'s metrics (all of them typed)."""
        rest = dict(scored)
        out = cls.parse(rest)
        assert not rest, f"score_attack keys without a RocScores field: {sorted(rest)}"
        return out


@dataclass(frozen=True)
class MembershipViews:
    """Which classes and records the headline score exposes (:mod:`privtool.attacks.views`):
    per class (class -> n_in, n_out, auc, tpr_at_* ; null where a class cannot be scored), the
    class scored best, the members caught at each low FPR level, the top records' indices."""

    per_class: Mapping[str, Mapping[str, Any]] = nested(factory=dict)
    most_exposed_class: int | None = None
    most_exposed_class_auc: float | None = None
    records_exposed: Mapping[float, int] = nested(factory=dict)
    top_exposed_index: list[int] = nested(factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "per_class": {c: dict(v) for c, v in self.per_class.items()},
            "most_exposed_class": self.most_exposed_class,
            "most_exposed_class_auc": self.most_exposed_class_auc,
            **{
                f"records_exposed_at_{s}": self.records_exposed[f]
                for s, f in LEVELS.items()
                if f in self.records_exposed
            },
            "top_exposed_index": list(self.top_exposed_index),
        }

    @classmethod
    def parse(cls, d: dict[str, Any]) -> MembershipViews | None:
        if "per_class" not in d:  # results written before the views existed
            return None
        exposed = {
            f: d.pop(f"records_exposed_at_{s}")
            for s, f in LEVELS.items()
            if f"records_exposed_at_{s}" in d
        }
        return cls(
            per_class=d.pop("per_class"),
            records_exposed=exposed,
            top_exposed_index=d.pop("top_exposed_index", []),
            **_plain(cls, d),
        )


def _is_store_key(k: str) -> bool:
    return k in ("store", "n_models", "store_models_trained") or "_models_" in k


@dataclass(frozen=True)
class MembershipResult(AttackResult):
    """A membership attack (loss, reference = MIA-R, lira offline/online, shokri, rmia).

    ``scores`` are the headline score's numbers (unprefixed keys); an attack with several
    scores (lira and rmia: ``online``, ``offline``) lists each in ``variants`` (keys
    ``<variant>_<key>``, the headline's included). The rest: the evaluation set's accuracy
    and loss, the seed, the model store's description (``store``: its path, ``n_models``,
    ``store_models_trained``, ``<kind>_models_*``), the views, and the numbers a single
    attack adds (Yeom's threshold, Shokri's attack accuracy, RMIA's a, γ and T, queries)."""

    kind: ClassVar[str] = "membership"

    scores: RocScores = nested(factory=RocScores)
    variants: Mapping[str, RocScores] = nested(factory=dict)
    views: MembershipViews | None = nested()
    store: Mapping[str, Any] = nested(factory=dict)
    eval_train_accuracy: float | None = None
    eval_test_accuracy: float | None = None
    eval_train_loss: float | None = None
    eval_test_loss: float | None = None
    seed: int | None = None
    # loss (Yeom et al. 2018): accuracy at the target's mean training loss
    yeom_threshold: float | None = None
    yeom_accuracy: float | None = None
    # shokri: the attack models' accuracy at their 0.5 decision
    attack_accuracy: float | None = None
    # lira / rmia: the queries
    augment: str | None = None
    n_queries: int | None = None
    # lira / rmia: e.g. augmented queries on views the target never trained on (the CLI prints them)
    warnings: list[str] | None = None
    # rmia
    offline_a: float | None = None
    offline_a_tuned: bool | None = None
    offline_a_auc: Mapping[str, float] | None = None
    gamma: float | None = None
    temperature: float | None = None
    n_population: int | None = None

    def _body(self) -> dict[str, Any]:
        out = self.scores.to_json()
        for name, v in self.variants.items():
            out.update(v.to_json(f"{name}_", shared=False))
        out.update(self.store)
        out.update(_write_plain(self))
        if self.views is not None:
            out.update(self.views.to_json())
        return out

    @classmethod
    def _parse(cls, d: dict[str, Any]) -> dict[str, Any]:
        names = sorted(
            k[: -len("_auc")]
            for k in d
            if k.endswith("_auc") and f"{k[: -len('_auc')]}_balanced_accuracy" in d
        )
        variants = {n: RocScores.parse(d, f"{n}_", shared=False) for n in names}
        scores = RocScores.parse(d)
        # a variant shares the headline's evaluation set and ε settings (written once)
        variants = {n: v.sharing(scores) for n, v in variants.items()}
        store = {k: d.pop(k) for k in list(d) if _is_store_key(k)}
        return dict(
            scores=scores,
            variants=variants,
            store=store,
            views=MembershipViews.parse(d),
            **_plain(cls, d),
        )


# --------------------------------------------------------------------------- reconstruction


@dataclass(frozen=True)
class ReconstructionResult(AttackResult):
    """A gradient reconstruction attack (dlg, idlg, iga): paper 1's image scores (mean SSIM,
    median MSE, mean PSNR, with their spread; :func:`~privtool.attacks.image_metrics.
    summarize_reconstructions`), the label accuracy, the median matching loss, the set-up,
    and the release the attacker observed (``release``: its name and ``release_*`` settings,
    :meth:`privtool.attacks.gradients.Release.describe`)."""

    kind: ClassVar[str] = "reconstruction"

    ssim: float | None = None
    ssim_median: float | None = None
    ssim_std: float | None = None
    ssim_variant: str | None = None
    mse: float | None = None
    mse_mean: float | None = None
    psnr: float | None = None
    psnr_median: float | None = None
    label_accuracy: float | None = None
    loss: float | None = None
    n_targets: int | None = None
    n_images: int | None = None
    batch_size: int | None = None
    at: str | None = None
    iterations: int | None = None
    release: Mapping[str, Any] = nested(factory=dict)

    def _body(self) -> dict[str, Any]:
        return {**_write_plain(self), **self.release}

    @classmethod
    def _parse(cls, d: dict[str, Any]) -> dict[str, Any]:
        release = {k: d.pop(k) for k in list(d) if k == "release" or k.startswith("release_")}
        return dict(release=release, **_plain(cls, d))


# -------------------------------------------------------------------------------- inversion


@dataclass(frozen=True)
class InversionResult(AttackResult):
    """Model inversion (paper 3): the MIA distance of the inverted classes to their nearest
    training image (mean, median, min; ``mia_distance_metric`` l2 or ssim), the model's mean
    confidence in them, and the set-up."""

    kind: ClassVar[str] = "inversion"

    mia_distance: float | None = None
    mia_distance_median: float | None = None
    mia_distance_min: float | None = None
    mia_distance_metric: str | None = None
    confidence: float | None = None
    n_classes: int | None = None
    variant: str | None = None
    regularizer: str | None = None
    iterations: int | None = None


RESULTS: dict[str, type[AttackResult]] = {
    c.kind: c for c in (MembershipResult, ReconstructionResult, InversionResult)
}
"""Attack kind (``metrics.json: kind``, ``Attack.kind``) -> its result class."""
