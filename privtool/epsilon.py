"""ε from hyperparameters, without training (``privtool epsilon``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from privtool.errors import PrivtoolError
from privtool.schema import Rule, settings, validate


@settings("", noise_multiplier=Rule(ge=0, allowed="a number >= 0"),
          sample_rate=Rule(gt=0, le=1, allowed="a number in (0, 1]"),
          steps=Rule(ge=0, allowed="an integer >= 0"), epochs=Rule(gt=0, allowed="a number > 0"),
          delta=Rule(gt=0, lt=1), accountant=Rule(choices=("rdp", "prv")),
          kappa=Rule(ge=0, allowed="a number >= 0"), parts=Rule(ge=1),
          units=Rule(ge=1, allowed="an integer >= 1 (the number of classes or subclasses)"),
          unit_sampling=Rule(choices=("poisson", "fixed")), k_sub=Rule(ge=1))
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

    def __post_init__(self) -> None:
        validate(self)


def steps_from(*, steps: int | None, epochs: float | None, sample_rate: float) -> int:
    """Steps given directly, or epochs / sample_rate (Opacus' steps per epoch = 1/q)."""
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
    return int(round(epochs / sample_rate))


def compute_epsilon(mech: str, *, sample_rate: float | None, steps: int | None = None,
                    epochs: float | None = None, delta: float = 1e-5,
                    noise_multiplier: float | None = None, accountant: str = "rdp",
                    kappa: float | None = None, parts: int = 1, n_units: int | None = None,
                    unit_sampling: str = "poisson", k_sub: int = 1) -> dict[str, Any]:
    """Every ε field of ``mech`` for the given hyperparameters."""
    from privtool.accounting import gaussian_epsilon, vmf_epsilon

    EpsilonQuery(mech, sample_rate=sample_rate, steps=steps, epochs=epochs, delta=delta,
                 noise_multiplier=noise_multiplier, accountant=accountant, kappa=kappa,
                 parts=parts, units=n_units, unit_sampling=unit_sampling, k_sub=k_sub)
    if mech == "none":
        return {"mechanism": "none", "epsilon": None}
    if sample_rate is None:
        raise PrivtoolError(f"--sample-rate is required for --mech {mech}")
    n_steps = steps_from(steps=steps, epochs=epochs, sample_rate=sample_rate)
    if mech == "gaussian":
        if noise_multiplier is None:
            raise PrivtoolError("--noise-multiplier is required for --mech gaussian")
        res = gaussian_epsilon(noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                               steps=n_steps, delta=delta, accountant=accountant)
        out = {"mechanism": "gaussian", "epsilon": res.epsilon, "delta": delta,
               "accountant": res.accountant, "noise_multiplier": noise_multiplier,
               "sample_rate": sample_rate, "steps": n_steps}
        if res.warning:
            out["warning"] = res.warning
        return out
    if mech == "vmf":
        if kappa is None:
            raise PrivtoolError("--kappa is required for --mech vmf")
        fields = vmf_epsilon(kappa=kappa, parts=parts, sample_rate=sample_rate, steps=n_steps,
                             delta=delta)
        return {"mechanism": "vmf", **fields}
    if mech in ("class", "subclass"):
        from privtool.accounting import unit_epsilon

        if noise_multiplier is None:
            raise PrivtoolError(f"--noise-multiplier is required for --mech {mech}")
        if unit_sampling == "fixed" and n_units is None:
            raise PrivtoolError("--units K (number of classes/subclasses) is required with "
                                "--unit-sampling fixed")
        out = unit_epsilon(kind=mech, sampling=unit_sampling, noise_multiplier=noise_multiplier,
                           sample_rate=sample_rate, steps=n_steps, delta=delta,
                           n_units=n_units or 1, accountant=accountant, k_sub=k_sub)
        return {"mechanism": mech, "noise_multiplier": noise_multiplier, "unit_sample_rate":
                sample_rate, "steps": n_steps, "unit_sampling": unit_sampling, **out}
    from privtool.mechanisms import MECHANISMS

    MECHANISMS.get(mech)  # unknown name -> error listing valid ones
    raise PrivtoolError(f"`privtool epsilon` does not support --mech {mech} yet")
