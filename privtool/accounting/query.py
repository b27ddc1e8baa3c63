"""The query of ``privtool epsilon`` and the step counting every mechanism shares: what a
mechanism's accountant (``Mechanism.accountant``, docs/SPEC.md §5) is given. It sits below
both :mod:`privtool.epsilon` (the front end, which reads the MECHANISMS registry) and the
mechanisms, so neither imports the other's module at import time."""

from __future__ import annotations

import math
from dataclasses import dataclass

from privtool.errors import PrivtoolError
from privtool.schema import Rule, settings, validate


@settings(
    "",
    noise_multiplier=Rule(ge=0, allowed="a number >= 0"),
    sample_rate=Rule(gt=0, le=1, allowed="a number in (0, 1]"),
    steps=Rule(ge=0, allowed="an integer >= 0"),
    epochs=Rule(gt=0, allowed="a number > 0"),
    delta=Rule(gt=0, lt=1),
    accountant=Rule(choices=("rdp", "prv")),
    kappa=Rule(ge=0, allowed="a number >= 0"),
    parts=Rule(ge=1),
    units=Rule(ge=1, allowed="an integer >= 1 (the number of classes or subclasses)"),
    unit_sampling=Rule(choices=("poisson", "fixed")),
    k_sub=Rule(ge=1),
)
@dataclass(frozen=True)
class EpsilonQuery:
    """``privtool epsilon``'s flags, checked by :mod:`privtool.schema` like every setting
    (errors name the setting: ``units=0 is not allowed: an integer >= 1 ...``)."""

    mech: str
    sample_rate: float | None = None
    steps: int | None = None
    epochs: float | None = None
    delta: float = 1e-5
    noise_multiplier: float | None = None
    accountant: str = "rdp"
    kappa: float | None = None
    parts: int = 1
    units: int | None = None
    unit_sampling: str = "poisson"
    k_sub: int = 1
    #: the VMF parts' dimensions (--part-dims or --model/--partition), for mechanisms with
    #: ``uses_part_dims``
    part_dims: tuple[int, ...] | None = None
    vmf_mode: str = "alg2"

    def __post_init__(self) -> None:
        validate(self)

    def n_steps(self) -> int:
        """The steps of the query (--steps, or --epochs at --sample-rate, as train counts)."""
        if self.sample_rate is None:
            raise PrivtoolError(f"--sample-rate is required for --mech {self.mech}")
        return steps_from(steps=self.steps, epochs=self.epochs, sample_rate=self.sample_rate)


def steps_per_epoch(batches_per_epoch: float) -> int:
    """The steps one epoch runs, from n/b (records over batch size) or 1/q: round(n/b), at
    least 1. ``train`` (every mechanism's schedule) and ``privtool epsilon --epochs`` both count
    steps with this, so an epsilon computed from epochs is the one a run of those epochs has."""
    return max(1, round(batches_per_epoch))


def steps_from(*, steps: int | None, epochs: float | None, sample_rate: float) -> int:
    """Steps given directly, or epochs × :func:`steps_per_epoch` (1/q), as ``train`` runs them
    (round(n/b) steps per epoch, not round(epochs/q)); a fractional epoch count is rounded up,
    so ε never comes out below that of the steps actually run."""
    if steps is not None and epochs is not None:
        raise PrivtoolError("give either --steps or --epochs, not both")
    if steps is not None:
        if steps < 0:
            raise PrivtoolError(f"--steps={steps} is not allowed: an integer >= 0")
        return int(steps)
    if epochs is None:
        raise PrivtoolError("give the number of steps (--steps N) or of epochs (--epochs N)")
    if epochs <= 0:
        raise PrivtoolError(f"--epochs={epochs} is not allowed: a number > 0")
    if not 0 < sample_rate <= 1:
        raise PrivtoolError(f"--sample-rate={sample_rate} is not allowed: a number in (0, 1]")
    total = epochs * steps_per_epoch(1 / sample_rate)
    return int(total) if float(total).is_integer() else math.ceil(total)
