"""The ε of a whole selection curve: every NearPrivate release on the same private data, composed.

The curve (``privtool select --strategy all``) runs NearPrivate once per budget × seed, and each
run is a fresh DP-PCA and a fresh noisy support count of the *same* private training set, all
published together (the curve's accuracies are functions of them). Its guarantee is therefore
the composition of all of them with the parent's training — not one cell's ε.

Per NearPrivate cell (see :mod:`privtool.select.dp_pca`), under the parent's record-level
relation, whose sensitivities the cell recorded:

* DP-PCA: a Gaussian mechanism with L2 sensitivity Δ (``dp_pca_sensitivity``) and noise σ
  (``dp_pca_sigma``): its privacy loss is that of a 1-D Gaussian with noise multiplier σ/Δ
  (dp_accounting ``GaussianDpEvent(σ/Δ)``);
* support counts: Laplace(b) on each count, b = ``support_laplace_scale``. A neighbour changes
  the histogram by +1 in one bin (Δ₁ = 1), or by +1 and −1 in two different bins (Δ₁ = 2: one vote
  moves, or a point enters the top k and pushes another out): that is Δ₁ independent unit shifts
  of Laplace(b) coordinates, i.e. Δ₁ ``LaplaceDpEvent(b)`` composed.

These events compose adaptively (each later release may depend on earlier ones) and are
accounted with dp_accounting's PLD accountant (pessimistic discretisation; Koskela et al. 2020,
Meiser & Mohammad 2018), which treats each event's neighbouring pair as its worst case, at the
δ of one cell (δ_dpPCA), so the whole curve keeps one cell's δ. The parent's training, known
only as (ε_dp, δ_dp), is added by basic composition (Dwork & Roth 2014, Thm. 3.16). Plain basic
composition of every part gives (ε_dp + cells·(ε_dpPCA + ε_support), δ_dp + cells·δ_dpPCA);
the PLD result is reported when its ε is no larger (its δ is never larger), basic otherwise
and whenever PLD accounting fails.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from privtool.select.budget import BASIC, Cost

PLD = (
    "PLD (dp_accounting, pessimistic) over every NearPrivate release (Gaussian DP-PCA, "
    "Laplace support counts), plus the parent by basic composition"
)


def cell_events(details: Mapping[str, Any]) -> list[Any]:
    """dp_accounting events of one NearPrivate cell from its recorded selection details."""
    from dp_accounting import dp_event

    sigma, sens = float(details["dp_pca_sigma"]), float(details["dp_pca_sensitivity"])
    scale, l1 = float(details["support_laplace_scale"]), float(details["support_sensitivity"])
    if l1 not in (1.0, 2.0):
        raise ValueError(f"support sensitivity {l1} is not 1 or 2")
    return [
        dp_event.GaussianDpEvent(sigma / sens),
        *[dp_event.LaplaceDpEvent(scale) for _ in range(int(l1))],
    ]


def pld_epsilon(cells: Sequence[Mapping[str, Any]], delta: float) -> float:
    """ε at ``delta`` of all ``cells``' releases composed (PLD, pessimistic)."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant

    groups: dict[tuple[float, ...], int] = {}  # identical cells compose as one self-composition
    for c in cells:
        key = tuple(
            float(c[k])
            for k in (
                "dp_pca_sigma",
                "dp_pca_sensitivity",
                "support_laplace_scale",
                "support_sensitivity",
            )
        )
        groups[key] = groups.get(key, 0) + 1
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for key, count in groups.items():
        cell = dict(
            zip(
                (
                    "dp_pca_sigma",
                    "dp_pca_sensitivity",
                    "support_laplace_scale",
                    "support_sensitivity",
                ),
                key,
            )
        )
        acc.compose(dp_event.ComposedDpEvent(cell_events(cell)), count)
    return float(acc.get_epsilon(delta))


def compose_curve(
    parent: Cost, per_cell: Sequence[Cost], cells: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The curve's composed guarantee: ``parent`` (once) and every cell's releases.

    ``per_cell`` are one NearPrivate cell's (ε, δ) parts (DP-PCA, support); ``cells`` the
    recorded details of each NearPrivate cell that ran (empty: nothing but the parent).
    """
    n = len(cells)
    out: dict[str, Any] = {"n_private_releases": n, "relation": parent.relation}
    if parent.epsilon is None:
        out.update(epsilon_composed=None, delta_composed=None, composition=BASIC)
        return out
    delta_cell = sum(c.delta for c in per_cell)
    eps_basic = parent.epsilon + n * sum(float(c.epsilon or 0.0) for c in per_cell)
    delta_basic = parent.delta + n * delta_cell
    out.update(epsilon_basic=eps_basic, delta_basic=delta_basic, delta_composed=delta_basic)
    if n == 0:
        out.update(
            epsilon_composed=parent.epsilon,
            composition="the parent alone (no strategy of the curve read the private data)",
        )
        return out
    try:
        eps_pld = parent.epsilon + pld_epsilon(cells, delta_cell)
    except (ImportError, ValueError, ArithmeticError, RuntimeError) as e:  # fall back to basic
        out.update(
            epsilon_composed=eps_basic, composition=f"{BASIC} (PLD failed: {type(e).__name__})"
        )
        return out
    out["epsilon_pld"] = eps_pld
    if math.isfinite(eps_pld) and eps_pld <= eps_basic:  # smaller ε at a smaller δ: dominates
        out.update(
            epsilon_composed=eps_pld, delta_composed=parent.delta + delta_cell, composition=PLD
        )
    else:
        out.update(epsilon_composed=eps_basic, composition=BASIC)
    return out


def curve_parent(plans: Sequence[Any], metrics: Mapping[str, Any], *, record_level: bool) -> Cost:
    """The parent release a curve rests on: its strategies may start from different
    checkpoints of one run, which are prefixes of one training trajectory, so the latest one's
    guarantee covers them all (record level when a strategy composes with private releases)."""
    from privtool.select.budget import parent_cost

    latest = max(plans, key=lambda p: math.inf if p.candidate.epoch is None else p.candidate.epoch)
    return parent_cost(
        str(metrics.get("mechanism")), latest.candidate.privacy, metrics, record_level=record_level
    )
