"""What every attack shares: the registry, the contract, and the loaded target run.

An attack is a small class registered in :data:`ATTACKS`. Its ``run`` gets the target run
(model, data, splits, mechanism and ε, all checked against the run's meta.json) and a
directory to write its payload into; it returns its metrics. Membership attacks are pure
functions over saved signals; reconstruction attacks never see the original image (a
separate scoring step compares), as in breaching.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from privtool.errors import PrivtoolError
from privtool.registry import Registry

AUGMENTS = ("none", "mirror", "mirror-shift")  # attack.augment (privtool.attacks.queries)


@dataclass(frozen=True)
class AttackConfig:
    """Shared ``attack:`` keys. Each attack's own keys live in ``attack.<name>:``."""

    name: str = "reference"
    n_models: int = 8          # reference / shadow models
    n_targets: int = 100       # images to reconstruct / classes to invert
    seed: int = 0
    device: str = "auto"
    confidence: float = 0.95   # Clopper–Pearson level of the empirical ε lower bound
    delta: float = 1e-5        # δ at which the empirical ε lower bound is stated
    epsilon_sides: str = "one-sided"  # one-sided ("higher score = member") | two-sided (and reverse)
    store: str | None = None   # reference/shadow model store; null: runs/store/<dataset>-<model>-<hash>
    workers: int = 0           # processes training store models (0: one per CPU core)
    backend: str = "local"     # local (processes / stacked on CUDA) | ray (Ray tasks; SPEC §11)
    ray_address: str | None = None  # ray: null starts a local Ray; "auto" or "ray://host:port" joins a cluster
    augment: str = "none"      # lira / rmia queries: none | mirror | mirror-shift (attacks.queries)

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, allowed: str) -> PrivtoolError:
            return PrivtoolError(f"attack.{name}={value!r} is not allowed: {allowed}")

        if not isinstance(self.n_models, int) or self.n_models < 1:
            raise bad("n_models", self.n_models, "an integer >= 1")
        if not isinstance(self.n_targets, int) or self.n_targets < 1:
            raise bad("n_targets", self.n_targets, "an integer >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise bad("device", self.device, "auto, cpu or cuda")
        if not 0 < self.confidence < 1:
            raise bad("confidence", self.confidence, "a number in (0, 1)")
        if not 0 < self.delta < 1:
            raise bad("delta", self.delta, "a number in (0, 1)")
        if self.epsilon_sides not in ("one-sided", "two-sided"):
            raise bad("epsilon_sides", self.epsilon_sides, "one-sided or two-sided")
        if self.store is not None and (not isinstance(self.store, str) or not self.store):
            raise bad("store", self.store, "a directory path or null")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise bad("workers", self.workers, "an integer >= 0 (0: one per CPU core)")
        if self.backend not in ("local", "ray"):
            raise bad("backend", self.backend, "local or ray")
        if self.ray_address is not None and (not isinstance(self.ray_address, str)
                                             or not self.ray_address):
            raise bad("ray_address", self.ray_address, 'null, "auto" or "ray://HOST:PORT"')
        if self.augment not in AUGMENTS:
            raise bad("augment", self.augment, " | ".join(AUGMENTS))


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
        raise PrivtoolError(f"unknown params key attack.{k}; valid keys in 'attack': "
                            f"{', '.join(sorted(shared))}, or an attack name "
                            f"({', '.join(ATTACKS.names())}) holding that attack's options")
    if not isinstance(own, Mapping):
        raise PrivtoolError(f"params attack.{name} must be a mapping of that attack's options")
    cfg = AttackConfig(**{**{k: v for k, v in raw.items() if k in shared}, "name": name})
    return cfg, dict(own)


@dataclass
class Target:
    """A trained run ready to attack (``RUN_DIR`` or ``RUN_DIR@EPOCH``)."""

    dir: Path
    epoch: int | None
    meta: dict[str, Any]
    metrics: dict[str, Any]
    params: Any                      # privtool.config.Params the run was trained with
    data: Any                        # privtool.data.ImageData, fingerprint-checked
    splits: dict[str, np.ndarray]    # index arrays, hash-checked against meta.json
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
        keep = ("mechanism", "dataset", "model", "test_accuracy", "train_accuracy",
                "noise_multiplier", "kappa", "parts", "partition", "delta", "vmf_mode",
                "dp_guarantee")
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
        from dataclasses import fields

        self.cfg = cfg
        raw = dict(options or {})
        valid = [f.name for f in fields(self.Options)]
        unknown = [k for k in raw if k not in valid]
        if unknown:
            raise PrivtoolError(f"unknown params key attack.{self.name}.{unknown[0]}; valid keys: "
                                f"{', '.join(valid) or '(none)'}")
        self.options = self.Options(**raw)

    def check(self, target: Target) -> None:
        """Refuse (PrivtoolError) a target this attack cannot use."""

    @abstractmethod
    def run(self, target: Target, out: Path, progress: Any = None) -> dict[str, Any]:
        """Attack ``target``, write payload files (scores, CSV, PNG) under ``out`` and return
        the metrics (numbers, plus a few identifying strings)."""


ATTACKS: Registry[type[Attack]] = Registry("attack")
