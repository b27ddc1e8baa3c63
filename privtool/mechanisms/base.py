"""What every training mechanism shares: the batch schedule, batch samplers, the contract.

A mechanism owns only what differs between DP flavours: how batches are sampled, how
per-sample gradients become the released (privatized) gradient, and its accountant.
Per-sample gradients and the DP optimizer plumbing come from Opacus.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from privtool.config import TrainConfig
from privtool.epsilon import steps_per_epoch as epoch_steps
from privtool.errors import PrivtoolError
from privtool.registry import Registry

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
    """Base class of the entries of :data:`MECHANISMS`."""

    name: ClassVar[str]
    #: the neighbouring relation the accountant uses
    relation: ClassVar[str] = "add/remove one record"
    #: the metrics field holding the headline ε (named by the unit it protects)
    epsilon_key: str = "epsilon"

    def __init__(self, cfg: TrainConfig, schedule: Schedule) -> None:
        self.cfg = cfg
        self.schedule = schedule

    def prepare(self, x_train: Any, y_train: Any) -> None:
        """See the training data once before training (e.g. to form class/subclass units)."""

    def calibrate(self, model: Any) -> None:
        """Fix the noise (e.g. solve σ or κ for a target ε). Called once, before training."""

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


MECHANISMS: Registry[type[Mechanism]] = Registry("mechanism")
