"""The mechanism plug-in protocol (docs/SPEC.md §5): the contract every entry of
:data:`MECHANISMS` implements, the batch schedule and the batch samplers they share.

A mechanism owns only what differs between DP flavours: how batches are sampled, how
per-sample gradients become the released (privatized) gradient, its accountant (ε after a run
and ε from hyperparameters), how its noise is solved for a target ε, the release the
reconstruction attacks model, and what the selection stage composes. Everything else (the
training loop, ``privtool epsilon``, select, the attacks, calibrate, the CLI's ``--mech``) reads
the registry, so adding a mechanism is one module (inside privtool or a plug-in, see
:mod:`privtool.plugins`). Per-sample gradients and the DP optimizer plumbing come from Opacus.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping

import numpy as np

from privtool.accounting.query import EpsilonQuery
from privtool.accounting.query import steps_per_epoch as epoch_steps
from privtool.config import TrainConfig
from privtool.errors import PrivtoolError
from privtool.registry import Registry

if TYPE_CHECKING:
    from privtool.mechanisms.release import Release

ADD_REMOVE = "add/remove one record"
REPLACE_ONE = "replace one record"

# A stepper runs one optimisation step on a batch and returns (mean loss, n correct).
Stepper = Callable[[Any, Any], tuple[float, int]]


@dataclass(frozen=True)
class Schedule:
    """Batch size, sampling rate and step counts of a run, fixed before training starts."""

    n: int
    batch_size: int
    epochs: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise PrivtoolError("the training split is empty; enlarge data.splits.train")
        if self.batch_size > self.n:
            raise PrivtoolError(
                f"train.batch_size={self.batch_size} exceeds the {self.n} training "
                f"examples; lower train.batch_size"
            )

    @property
    def sample_rate(self) -> float:
        return self.batch_size / self.n

    @property
    def steps_per_epoch(self) -> int:
        return epoch_steps(self.n / self.batch_size)

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def shuffle_batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of a random permutation cut into batches (non-private training)."""
    perm = rng.permutation(n)
    for i in range(0, n, batch_size):
        yield np.sort(perm[i : i + batch_size])


def poisson_batches(
    n: int, sample_rate: float, steps: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Each record joins each batch independently with probability ``sample_rate``
    (the sampling the Gaussian RDP/PRV accountants assume)."""
    for _ in range(steps):
        yield np.flatnonzero(rng.random(n) < sample_rate)


def fixed_size_batches(
    n: int, batch_size: int, steps: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Each step draws ``batch_size`` distinct records uniformly, independently of other steps
    (sampling without replacement; Balle et al. 2018 amplification under replace-one)."""
    for _ in range(steps):
        yield np.sort(rng.choice(n, size=batch_size, replace=False))


class Mechanism(ABC):
    """A training mechanism: one module, one class registered in :data:`MECHANISMS`.

    The plug-in protocol (docs/SPEC.md §5). Class-level facts and hooks, usable without a run:

    * ``name``; ``relation`` (the neighbouring relation of the guarantee the accountant
      states); ``record_relation`` (the relation of its record-level guarantee, which select
      composes with); ``epsilon_key`` (the metrics field of the headline ε);
    * ``is_private`` (False: ε = ∞, no δ check, reproducible noise; ``none``);
    * :meth:`accountant` — every ε field from hyperparameters (what ``privtool epsilon``
      prints, from an :class:`~privtool.accounting.query.EpsilonQuery`); ``uses_part_dims`` (it reads
      ``--part-dims``/``--model``); :meth:`query_population` (the count δ is checked against);
    * :meth:`release` — the :class:`~privtool.mechanisms.release.Release` of one batch's
      gradient for the reconstruction threat model (``release_class``), from a run's recorded
      settings;
    * :meth:`select_cost` — the run's guarantee as (ε, δ, relation) for select's composition;
    * :meth:`label` — a short name for pictures; ``nominal_key`` (the metrics field calibrate
      quotes as its nominal ε, if not the ε target); ``canaries`` (the canary kinds
      ``privtool audit`` may use on it); ``ddp_adapter`` (how ``train.distributed=ddp`` shares
      its batches, :mod:`privtool.distributed`; None: not supported).

    Per run (an instance, built from ``train:`` and the :class:`Schedule`): :meth:`prepare`,
    :meth:`calibrate` (fixes the noise; a target ε goes through :meth:`solve`), :meth:`batches`
    (its sampling), :meth:`make_stepper` (privatize per-sample gradients: the optimizer hook),
    :meth:`privacy` (every ε field after ``steps`` steps), :meth:`settings`,
    :meth:`delta_population`, :meth:`artifacts`, :meth:`accountant_state`.

    Every privacy claim a mechanism makes states its relation, its sampling and the theorem
    it rests on in its docstring, and is pessimistic where approximate.
    """

    name: ClassVar[str]
    #: the neighbouring relation the accountant uses
    relation: ClassVar[str] = ADD_REMOVE
    #: the neighbouring relation of the record-level guarantee (what select composes with)
    record_relation: ClassVar[str] = ADD_REMOVE
    #: False for non-private training: ε = ∞, no δ check, noise drawn from the seed
    is_private: ClassVar[bool] = True
    #: True where ``privtool epsilon`` takes the parts' dimensions (--part-dims / --model)
    uses_part_dims: ClassVar[bool] = False
    #: metrics field calibrate quotes as the run's nominal ε (None: the ε target / epsilon)
    nominal_key: ClassVar[str | None] = None
    #: canary kinds (privtool.audit.canaries) that can audit this mechanism
    canaries: ClassVar[tuple[str, ...]] = ()
    #: the reconstruction threat model's Release of a batch (privtool.mechanisms.release)
    release_class: ClassVar[type[Release] | None] = None
    #: privtool.distributed adapter for train.distributed=ddp (None: not supported)
    ddp_adapter: ClassVar[str | None] = None
    #: the metrics field holding the headline ε (named by the unit it protects)
    epsilon_key: str = "epsilon"

    # --- class-level protocol: no run needed ------------------------------------------------

    @classmethod
    def accountant(cls, q: EpsilonQuery) -> dict[str, Any]:
        """Every ε field for the hyperparameters ``q`` (``privtool epsilon --mech NAME``):
        at least ``mechanism`` and ``epsilon`` (None where infinite); missing flags it needs
        raise :class:`PrivtoolError` naming them."""
        raise PrivtoolError(f"`privtool epsilon` does not support --mech {cls.name} yet")

    @classmethod
    def query_population(cls, *, n: int | None, n_units: int | None) -> tuple[int | None, str]:
        """(count, what) δ is compared with for ``privtool epsilon`` given ``--n`` records and
        ``--units`` units: by default the training records (None: unknown, no check)."""
        return n, "training records"

    @classmethod
    def release(cls, settings: Mapping[str, Any]) -> Release:
        """The reconstruction threat model's release of one batch's gradient, from a run's
        recorded settings (metrics.json): its ``release_class`` built on them."""
        if cls.release_class is None:
            raise PrivtoolError(
                f"mechanism {cls.name!r} has no gradient release for the reconstruction attacks"
            )
        return cls.release_class(settings)

    @classmethod
    def select_cost(
        cls, privacy: Mapping[str, Any], metrics: Mapping[str, Any], *, record_level: bool
    ) -> tuple[float | None, float, str]:
        """A checkpoint's guarantee as (ε or None for ∞, δ, relation) for select's basic
        composition; ``record_level``: per record (composing with releases about records)."""
        return (
            finite_or_none(privacy.get("epsilon")),
            float(privacy.get("delta") or 0.0),
            cls.record_relation,
        )

    @classmethod
    def label(cls, metrics: Mapping[str, Any]) -> str:
        """A short label of the attacked run for pictures, from an attack's ``target_*``
        metrics fields."""
        mech, eps = metrics.get("target_mechanism", "?"), metrics.get("target_epsilon")
        return f"{mech} ε={eps:.3g}" if isinstance(eps, (int, float)) else str(mech)

    # --- per run ---------------------------------------------------------------------------

    def __init__(self, cfg: TrainConfig, schedule: Schedule) -> None:
        self.cfg = cfg
        self.schedule = schedule

    def prepare(self, x_train: Any, y_train: Any) -> None:
        """See the training data once before training (e.g. to form class/subclass units)."""

    def calibrate(self, model: Any) -> None:
        """Fix the noise (e.g. solve σ or κ for a target ε). Called once, before training."""

    def solve(self, target_epsilon: float) -> float:
        """The noise parameter (σ, κ, ...) whose run of ``schedule.steps`` steps meets
        ``target_epsilon`` at ``cfg.delta`` (pessimistic: never a noise with a larger ε)."""
        raise PrivtoolError(f"mechanism {self.name!r} cannot solve its noise for a target ε")

    def batches(self, epoch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Index batches of one epoch."""
        return poisson_batches(
            self.schedule.n, self.schedule.sample_rate, self.schedule.steps_per_epoch, rng
        )

    @abstractmethod
    def make_stepper(self, model: Any, optimizer: Any, generator: Any) -> Stepper:
        """Wire model + optimiser into a function that takes one privatized step."""

    @abstractmethod
    def privacy(self, steps: int) -> dict[str, Any]:
        """Every ε field of the mechanism after ``steps`` steps (None where infinite)."""

    def settings(self) -> dict[str, Any]:
        """The noise and sampling settings to record in metrics.json."""
        return {"sample_rate": self.schedule.sample_rate, "batch_size": self.schedule.batch_size}

    def delta_population(self) -> tuple[int, str]:
        """(n, what): the count δ is compared with (the records of the guarantee's relation)."""
        return self.schedule.n, "training records"

    def artifacts(self) -> dict[str, Any]:
        """Extra arrays to save in the run directory ({file name: numpy array})."""
        return {}

    def accountant_state(self, steps: int) -> dict[str, Any]:
        """A plain, JSON-able description from which ε can be recomputed."""
        return {
            "mechanism": self.name,
            "relation": self.relation,
            **self.settings(),
            "steps": steps,
            "delta": self.cfg.delta,
            **self.privacy(steps),
        }


def finite_or_none(v: Any) -> float | None:
    """ε as stored: a finite float, or None for ∞ / missing."""
    return None if v is None or not math.isfinite(float(v)) else float(v)


MECHANISMS: Registry[type[Mechanism]] = Registry("mechanism")


#: the mechanism of non-private training (the reference models' recipe; `privtool.mechanisms.none`)
NON_PRIVATE = "none"


def is_private(name: str) -> bool:
    """Whether mechanism ``name`` trains with a privacy guarantee. A name no loaded module
    registers (e.g. a plug-in's run read without its plug-in) counts as private: the
    conservative reading, since nothing then treats its noise as reproducible or its ε as ∞."""
    return MECHANISMS.get(name).is_private if name in MECHANISMS else True
