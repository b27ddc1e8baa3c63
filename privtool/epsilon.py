"""ε from hyperparameters, without training (``privtool epsilon``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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

    def __post_init__(self) -> None:
        validate(self)


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


PARTITIONS = ("whole", "layer", "row")


def model_part_dims(model: str, partition: str, dataset: str = "mnist-5k") -> list[int]:
    """Dimensions of the VMF parts of ``model`` (built for ``dataset``'s input shape and classes)
    under ``partition``: what ``train --mech vmf`` would use."""
    from privtool.data.registry import DATASETS
    from privtool.mechanisms.vmf import part_dims
    from privtool.models import build_model

    if partition not in PARTITIONS:
        raise PrivtoolError(
            f"--partition={partition!r} is not allowed: one of {', '.join(PARTITIONS)}"
        )
    spec = DATASETS.get(dataset)
    if spec.shape is None or spec.n_classes is None:
        raise PrivtoolError(
            f"dataset {dataset!r} has no fixed input shape and class count; give "
            "the parts' dimensions with --part-dims instead"
        )
    net = build_model(model, spec.shape, spec.n_classes)
    return part_dims([p for p in net.parameters() if p.requires_grad], partition)


def vmf_part_dims(
    *,
    part_dims: str | None,
    model: str | None,
    partition: str | None,
    dataset: str | None,
    parts: int | None,
) -> tuple[list[int] | None, int]:
    """The parts' dimensions from ``--part-dims`` or ``--model``/``--partition`` (None: neither)
    and the number of parts (checked against ``--parts`` when both are given)."""
    from privtool.accounting.vmf_pld import parse_part_dims

    if part_dims is not None and model is not None:
        raise PrivtoolError("give either --part-dims or --model/--partition, not both")
    if model is None and (partition is not None or dataset is not None):
        raise PrivtoolError("--partition and --dataset need --model NAME (or give --part-dims)")
    dims = None
    if part_dims is not None:
        dims = parse_part_dims(part_dims)
    elif model is not None:
        dims = model_part_dims(model, partition or "whole", dataset or "mnist-5k")
    if dims is None:
        return None, 1 if parts is None else parts
    if parts is not None and parts != len(dims):
        raise PrivtoolError(
            f"--parts={parts} does not match the {len(dims)} parts of the "
            "dimensions given; leave --parts out"
        )
    return dims, len(dims)


def compute_epsilon(mech: str, *, n: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """Every ε field of ``mech`` for the given hyperparameters (see :func:`epsilon_fields`).

    With the population known — ``n`` training records (gaussian, vmf) or ``n_units``
    (class, subclass: unit-level DP) — δ ≥ 1/population is refused and δ > 1/(10·population)
    adds ``delta_warning`` (:mod:`privtool.accounting.delta`)."""
    from privtool.accounting.delta import check_delta

    if n is not None and n < 1:
        raise PrivtoolError(f"--n={n} is not allowed: an integer >= 1 (training records)")
    unit = mech in ("class", "subclass")
    population = kwargs.get("n_units") if unit else n
    warning = None
    if mech != "none" and population:
        warning = check_delta(
            kwargs.get("delta", 1e-5),
            int(population),
            f"{mech} units" if unit else "training records",
            name="--delta",
        )
    out = epsilon_fields(mech, **kwargs)
    if warning:
        out["delta_warning"] = warning
    return out


def epsilon_fields(
    mech: str,
    *,
    sample_rate: float | None,
    steps: int | None = None,
    epochs: float | None = None,
    delta: float = 1e-5,
    noise_multiplier: float | None = None,
    accountant: str = "rdp",
    kappa: float | None = None,
    parts: int = 1,
    n_units: int | None = None,
    unit_sampling: str = "poisson",
    k_sub: int = 1,
    part_dims: list[int] | None = None,
    vmf_mode: str = "alg2",
) -> dict[str, Any]:
    """Every ε field of ``mech`` for the given hyperparameters. VMF: the tight PLD ε when
    ``part_dims`` (each part's dimension) is given, else only the pure bound (and a note); a
    ``vmf_mode`` with no DP guarantee is refused (it has no ε)."""
    from privtool.accounting import gaussian_epsilon, vmf_epsilon

    EpsilonQuery(
        mech,
        sample_rate=sample_rate,
        steps=steps,
        epochs=epochs,
        delta=delta,
        noise_multiplier=noise_multiplier,
        accountant=accountant,
        kappa=kappa,
        parts=parts,
        units=n_units,
        unit_sampling=unit_sampling,
        k_sub=k_sub,
    )
    if part_dims is not None and mech != "vmf":
        raise PrivtoolError(f"--part-dims/--model are for --mech vmf, not --mech {mech}")
    if mech == "none":
        return {"mechanism": "none", "epsilon": None}
    if sample_rate is None:
        raise PrivtoolError(f"--sample-rate is required for --mech {mech}")
    n_steps = steps_from(steps=steps, epochs=epochs, sample_rate=sample_rate)
    if mech == "gaussian":
        if noise_multiplier is None:
            raise PrivtoolError("--noise-multiplier is required for --mech gaussian")
        res = gaussian_epsilon(
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            steps=n_steps,
            delta=delta,
            accountant=accountant,
        )
        out = {
            "mechanism": "gaussian",
            "epsilon": res.epsilon,
            "delta": delta,
            "accountant": res.accountant,
            "noise_multiplier": noise_multiplier,
            "sample_rate": sample_rate,
            "steps": n_steps,
        }
        if res.warning:
            out["warning"] = res.warning
        return out
    if mech == "vmf":
        from privtool.mechanisms.vmf_modes import make_mode

        mode = make_mode(vmf_mode, kappa=0.0, partition="whole")
        if not mode.guarantee:
            raise PrivtoolError(
                f"--vmf-mode {vmf_mode} has no DP guarantee, so it has no "
                f"epsilon ({mode.reason()}); only alg2 is accounted"
            )
        if kappa is None:
            raise PrivtoolError("--kappa is required for --mech vmf")
        if part_dims is not None:
            parts = len(part_dims)
        fields = vmf_epsilon(
            kappa=kappa,
            parts=parts,
            sample_rate=sample_rate,
            steps=n_steps,
            delta=delta,
            part_dims=part_dims,
        )
        out = {"mechanism": "vmf", **fields}
        if part_dims is None:
            out["note"] = (
                "only the pure bound: without the parts' dimensions (--part-dims, or "
                "--model and --partition) the tight PLD accountant cannot run"
            )
        else:
            from privtool.accounting.vmf_pld import format_part_dims

            out["part_dims"] = format_part_dims(part_dims)
        return out
    if mech in ("class", "subclass"):
        from privtool.accounting import unit_epsilon

        if noise_multiplier is None:
            raise PrivtoolError(f"--noise-multiplier is required for --mech {mech}")
        if unit_sampling == "fixed" and n_units is None:
            raise PrivtoolError(
                "--units K (number of classes/subclasses) is required with --unit-sampling fixed"
            )
        out = unit_epsilon(
            kind=mech,
            sampling=unit_sampling,
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            steps=n_steps,
            delta=delta,
            n_units=n_units or 1,
            accountant=accountant,
            k_sub=k_sub,
        )
        return {
            "mechanism": mech,
            "noise_multiplier": noise_multiplier,
            "unit_sample_rate": sample_rate,
            "steps": n_steps,
            "unit_sampling": unit_sampling,
            **out,
        }
    from privtool.mechanisms import MECHANISMS

    MECHANISMS.get(mech)  # unknown name -> error listing valid ones
    raise PrivtoolError(f"`privtool epsilon` does not support --mech {mech} yet")
