"""ε from hyperparameters, without training (``privtool epsilon``): the flags as one validated
:class:`EpsilonQuery`, handed to the mechanism's own accountant (``Mechanism.accountant``,
docs/SPEC.md §5)."""

from __future__ import annotations

from typing import Any

from privtool.accounting.query import (  # noqa: F401  (the query is part of this front end)
    EpsilonQuery,
    steps_from,
    steps_per_epoch,
)
from privtool.errors import PrivtoolError

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

    With the population known — ``n`` training records, or ``n_units`` for unit-level DP
    (``Mechanism.query_population``) — δ ≥ 1/population is refused and δ > 1/(10·population)
    adds ``delta_warning`` (:mod:`privtool.accounting.delta`)."""
    from privtool.accounting.delta import check_delta
    from privtool.mechanisms import MECHANISMS

    if n is not None and n < 1:
        raise PrivtoolError(f"--n={n} is not allowed: an integer >= 1 (training records)")
    cls = MECHANISMS.get(mech)
    population, what = cls.query_population(n=n, n_units=kwargs.get("n_units"))
    warning = None
    if cls.is_private and population:
        warning = check_delta(kwargs.get("delta", 1e-5), int(population), what, name="--delta")
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
    """Every ε field of ``mech`` for the given hyperparameters: its ``Mechanism.accountant``
    on the validated :class:`EpsilonQuery` (VMF: the tight PLD ε when ``part_dims`` is given,
    else only the pure bound; a ``vmf_mode`` with no DP guarantee is refused)."""
    from privtool.mechanisms import MECHANISMS

    q = EpsilonQuery(
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
        part_dims=None if part_dims is None else tuple(part_dims),
        vmf_mode=vmf_mode,
    )
    cls = MECHANISMS.get(mech)
    if q.part_dims is not None and not cls.uses_part_dims:
        users = " or ".join(n for n in MECHANISMS if MECHANISMS.get(n).uses_part_dims)
        raise PrivtoolError(f"--part-dims/--model are for --mech {users}, not --mech {mech}")
    return cls.accountant(q)
