"""``params.yaml: calibrate:`` as a frozen, validated dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from privtool.schema import Rule, build, invalid, settings, validate

#: attack kind -> the attack whose score is the papers' view (paper 1: MIA-R, IGA; paper 3:
#: the enhanced model inversion)
DEFAULT_HEADLINE = {"membership": "reference", "reconstruction": "iga", "inversion": "inversion"}
#: attack kind -> the score an attack of that kind is judged by (equivalent ε, accuracy-matched
#: comparison); paper 1 §5.4 calibrates with MIA-R AUC and IGA MSE, paper 3 with MIA distance
DEFAULT_JUDGED_BY = {"membership": "auc", "reconstruction": "mse", "inversion": "mia_distance"}


def _mechanisms() -> list[str]:
    from privtool.mechanisms import MECHANISMS

    return MECHANISMS.names()


def default_nominal() -> dict[str, str]:
    """mechanism -> metrics field holding its nominal ε (``Mechanism.nominal_key``; paper 1
    quotes VMF by its per-update ε_V); other mechanisms: the run's ε target (train.epsilon),
    else epsilon_<mechanism>, else epsilon."""
    from privtool.mechanisms import MECHANISMS

    return {m: k for m in MECHANISMS if (k := MECHANISMS.get(m).nominal_key)}


@settings(
    "calibrate",
    baseline=Rule(choices=_mechanisms),
    accuracy_tolerance=Rule(ge=0, le=1),
    confidence=Rule(gt=0, lt=1),
    epsilon_rtol=Rule(ge=0, lt=1),
)
@dataclass(frozen=True)
class CalibrateConfig:
    """How ``privtool calibrate`` joins runs and attacks into tables.

    ``baseline`` is the mechanism whose ε is the yardstick ("VMF at ε_V = 50 protects like
    Gaussian at ε ≈ …") and the left side of the Δ tables (paper 1 Table 7: Gaussian − VMF).
    """

    baseline: str = "gaussian"
    headline: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_HEADLINE))
    judged_by: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_JUDGED_BY))
    nominal: Mapping[str, str] = field(default_factory=default_nominal)
    accuracy_tolerance: float = 0.02  # |Δ test accuracy| for the accuracy-matched comparison
    confidence: float = 0.95  # level of every score interval (AUC, SSIM, MSE, ...)
    epsilon_rtol: float = 0.01  # nominal ε counted "equal" for the Δ tables

    def __post_init__(self) -> None:
        validate(self)
        from privtool.calibrate.scores import SCORES

        for kind in (*self.headline, *self.judged_by):
            if kind not in SCORES:
                raise invalid(f"calibrate.{kind}", kind, f"an attack kind: {', '.join(SCORES)}")
        for kind, key in self.judged_by.items():
            valid = [s.key for s in SCORES[kind]]
            if key not in valid:
                raise invalid(f"calibrate.judged_by.{kind}", key, f"one of {', '.join(valid)}")
        for name, default in (("headline", DEFAULT_HEADLINE), ("judged_by", DEFAULT_JUDGED_BY)):
            object.__setattr__(self, name, {**default, **getattr(self, name)})


def calibrate_settings(raw: Mapping[str, Any] | None) -> CalibrateConfig:
    """``params.yaml: calibrate:`` (after --set overrides) -> :class:`CalibrateConfig`;
    unknown keys name the key and the valid ones (:func:`privtool.schema.build`)."""
    return build(CalibrateConfig, raw, "calibrate")
