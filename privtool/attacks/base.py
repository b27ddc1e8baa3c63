"""What every attack shares: the registry, the contract, and the loaded target run.

An attack is a small class registered in :data:`ATTACKS`. Its ``run`` gets the target run
(model, data, splits, mechanism and ε, all checked against the run's meta.json) and a
directory to write its payload into; it returns its result, an object of its family
(:mod:`privtool.results`). Membership attacks are pure functions over saved signals;
reconstruction attacks never see the original image (a separate scoring step compares), as
in breaching.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from privtool.augment import AUGMENTS  # attack.augment (privtool.attacks.queries)
from privtool.errors import PrivtoolError
from privtool.registry import Registry
from privtool.results import AttackResult
from privtool.schema import Rule, build, seed_rule, settings, validate


@settings(
    "attack",
    n_models=Rule(ge=1),
    n_targets=Rule(ge=1),
    seed=seed_rule(),
    device=Rule(choices=("auto", "cpu", "cuda")),
    confidence=Rule(gt=0, lt=1),
    delta=Rule(gt=0, lt=1),
    store=Rule(allowed="a directory path or null"),
    workers=Rule(ge=0, allowed="an integer >= 0 (0: one per CPU core)"),
    backend=Rule(choices=("local", "ray")),
    ray_address=Rule(allowed='null, "auto" or "ray://HOST:PORT"'),
    epsilon_sides=Rule(choices=("one-sided", "two-sided")),
    augment=Rule(choices=AUGMENTS, allowed=" | ".join(AUGMENTS)),
)
@dataclass(frozen=True)
class AttackConfig:
    """Shared ``attack:`` keys. Each attack's own keys live in ``attack.<name>:``."""

    name: str = "reference"
    n_models: int = 8  # reference / shadow models
    n_targets: int = 100  # images to reconstruct / classes to invert
    seed: int = 0
    device: str = "auto"
    confidence: float = 0.95  # Clopper–Pearson level of the empirical ε lower bound
    delta: float = 1e-5  # δ at which the empirical ε lower bound is stated
    epsilon_sides: str = (
        "one-sided"  # one-sided ("higher score = member") | two-sided (and reverse)
    )
    store: str | None = (
        None  # reference/shadow model store; null: runs/store/<dataset>-<model>-<hash>
    )
    workers: int = 0  # processes training store models (0: one per CPU core)
    backend: str = "local"  # local (processes / stacked on CUDA) | ray (Ray tasks; SPEC §11)
    ray_address: str | None = (
        None  # ray: null starts a local Ray; "auto" or "ray://host:port" joins a cluster
    )
    augment: str = "none"  # lira / rmia queries: none | mirror | mirror-shift (attacks.queries)

    def __post_init__(self) -> None:
        validate(self)


def attack_settings(section: Mapping[str, Any] | None, name: str) -> tuple[AttackConfig, dict]:
    """Split ``params.yaml: attack:`` into the shared :class:`AttackConfig` (with ``name``)
    and the chosen attack's own options ``attack.<name>:``; unknown keys are errors."""
    from dataclasses import fields

    raw = dict(section or {})
    shared = {f.name for f in fields(AttackConfig)}
    own = raw.get(name) or {}
    for k, v in raw.items():
        if k in shared or k in ATTACKS:
            continue
        raise PrivtoolError(
            f"unknown params key attack.{k}; valid keys in 'attack': "
            f"{', '.join(sorted(shared))}, or an attack name "
            f"({', '.join(ATTACKS.names())}) holding that attack's options"
        )
    if not isinstance(own, Mapping):
        raise PrivtoolError(f"params attack.{name} must be a mapping of that attack's options")
    for other in ATTACKS.names():  # every attack's options are checked, not just this one's
        if other != name and raw.get(other) is not None:
            build(ATTACKS.get(other).Options, raw[other], f"attack.{other}")
    cfg = build(AttackConfig, {**{k: v for k, v in raw.items() if k in shared}, "name": name})
    return cfg, dict(own)


@dataclass
class Target:
    """A trained run ready to attack (``RUN_DIR`` or ``RUN_DIR@EPOCH``)."""

    dir: Path
    epoch: int | None
    meta: dict[str, Any]
    metrics: dict[str, Any]
    params: Any  # privtool.config.Params the run was trained with
    data: Any  # privtool.data.ImageData, fingerprint-checked
    splits: dict[str, np.ndarray]  # index arrays, hash-checked against meta.json
    state_dict: dict[str, Any]
    device: Any
    privacy: dict[str, Any] = field(default_factory=dict)  # ε fields at this checkpoint

    @property
    def mechanism(self) -> str:
        return str(self.metrics.get("mechanism"))

    def build_model(self) -> Any:
        """A fresh copy of the target model with the run's weights, on ``device``, eval mode."""
        from privtool.models import build_model

        model = build_model(self.params.train.model, self.data.shape, self.data.n_classes)
        model.load_state_dict(self.state_dict)
        return model.to(self.device).eval()

    def describe(self) -> dict[str, Any]:
        """Target fields every attack's metrics carry (mechanism, ε fields, dataset, model)."""
        keep = (
            "mechanism",
            "dataset",
            "model",
            "test_accuracy",
            "train_accuracy",
            "noise_multiplier",
            "kappa",
            "parts",
            "partition",
            "delta",
            "vmf_mode",
            "dp_guarantee",
        )
        out = {f"target_{k}": self.metrics[k] for k in keep if k in self.metrics}
        out.update({f"target_{k}": v for k, v in self.privacy.items() if k.startswith("epsilon")})
        out["target_epoch"] = self.epoch
        return out


class Attack(ABC):
    """Base of the entries of :data:`ATTACKS`. Settings come from ``params.yaml: attack:``
    (shared keys) and ``attack.<name>:`` (this attack's own keys, validated by ``Options``)."""

    name: ClassVar[str]
    kind: ClassVar[str]  # "membership" | "reconstruction" | "inversion"

    @dataclass(frozen=True)
    class Options:
        """This attack's own settings (override in subclasses)."""

    def __init__(self, cfg: Any, options: Mapping[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.options = build(self.Options, dict(options or {}), f"attack.{self.name}")

    def check(self, target: Target) -> None:
        """Refuse (PrivtoolError) a target this attack cannot use."""

    @abstractmethod
    def run(self, target: Target, out: Path, progress: Any = None) -> AttackResult:
        """Attack ``target``, write payload files (scores, CSV, PNG) under ``out`` and return
        the result: the :class:`~privtool.results.AttackResult` of this attack's
        ``kind`` (the stage names it and its target, and writes its ``to_json()``)."""


ATTACKS: Registry[type[Attack]] = Registry("attack")
