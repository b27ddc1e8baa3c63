"""Accounting for class- and subclass-level DP-SGD (paper 3, Alg. 2), sound for the relation stated.

A *unit* is a class (or a k-means subclass). Each step releases Σ_units clip_S(mean gradient of
the unit) + N(0, σ²S²·I). Two relations can be proved, and privtool offers both:

* ``poisson`` — every unit joins a step independently with probability q; neighbours differ by
  adding or removing one whole unit. One unit moves the sum by at most S, so this is exactly
  DP-SGD with units as records: Opacus' RDP/PRV accountant with (σ, q, T). As Opacus does with
  the dataset size, the K in the qK divisor is taken as public.
* ``fixed`` — each step draws k units uniformly without replacement from the K units;
  neighbours differ by replacing one unit. The sum then moves by at most 2S (two clipped means),
  a Gaussian of noise multiplier σ/2 w.r.t. that sensitivity, subsampled without replacement:
  dp_accounting's ``SampledWithoutReplacementDpEvent`` under ``REPLACE_ONE`` (RDP of Wang,
  Balle & Kasiviswanathan 2019), composed over T steps.

Paper 3's own Theorem 1 (replace-one unit under Poisson-style sampling, via a moments-accountant
mixture argument with O(q³/σ³) terms dropped) gives ε = 4q√(T ln(1/δ))/σ when
q < √(ε / (64√(T ln(1/δ)))). It is reported beside ours, labelled as the paper's, not used.

Record level (``epsilon_record``, ``delta_record``, ``record_group_size`` g; relation: add or
remove one record). Adding a record changes the unit that holds it — for ``class`` one class; for
``subclass`` the k-means partition of its class is recomputed from the private data, so all k_sub
subclasses of that class may change. Replacing one unit is one step of the ``fixed`` relation and
two (remove, add) of the ``poisson`` one, so g = (2 if poisson else 1) × (k_sub for subclass, 1
for class), and group privacy gives (gε, δ·Σ_{i<g} e^{iε}). Where that δ reaches 1 the unit
guarantee implies nothing for a record: ``epsilon_record`` is then None (∞).
"""

from __future__ import annotations

import math
from typing import Any

from privtool.accounting.gaussian import gaussian_epsilon, gaussian_noise_multiplier
from privtool.errors import PrivtoolError


def _check(name: str, ok: bool, value: Any, allowed: str) -> None:
    if not ok:
        raise PrivtoolError(f"{name}={value!r} is not allowed: {allowed}")


def fixed_unit_epsilon(
    *, noise_multiplier: float, n_units: int, units_per_step: int, steps: int, delta: float
) -> float:
    """ε of T steps, k of K units drawn without replacement, replace-one-unit (sensitivity 2S)."""
    _check("n_units", isinstance(n_units, int) and n_units >= 1, n_units, "an integer >= 1")
    _check(
        "units_per_step",
        isinstance(units_per_step, int) and 1 <= units_per_step <= n_units,
        units_per_step,
        f"an integer in [1, {n_units}]",
    )
    _check("noise_multiplier", noise_multiplier >= 0, noise_multiplier, "a number >= 0")
    _check("delta", 0 < delta < 1, delta, "a number in (0, 1)")
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    from dp_accounting import dp_event
    from dp_accounting.privacy_accountant import NeighboringRelation
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    event = dp_event.SelfComposedDpEvent(
        dp_event.SampledWithoutReplacementDpEvent(
            source_dataset_size=n_units,
            sample_size=units_per_step,
            event=dp_event.GaussianDpEvent(noise_multiplier / 2.0),
        ),
        steps,
    )
    acc = rdp.RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    acc.compose(event)
    return float(acc.get_epsilon(delta))


def paper3_theorem1(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> dict[str, float]:
    """Paper 3 Thm 1 / Cor 1 solved for ε, and whether its condition on q holds (1/0)."""
    if steps == 0:
        return {"epsilon_paper3_theorem1": 0.0, "paper3_theorem1_condition_holds": 1}
    if noise_multiplier == 0:
        return {"epsilon_paper3_theorem1": math.inf, "paper3_theorem1_condition_holds": 0}
    root = math.sqrt(steps * math.log(1 / delta))
    eps = 4 * sample_rate * root / noise_multiplier
    holds = sample_rate < math.sqrt(eps / (64 * root))
    return {"epsilon_paper3_theorem1": eps, "paper3_theorem1_condition_holds": int(holds)}


def record_group_size(*, kind: str, sampling: str, k_sub: int) -> int:
    """How many steps of the unit relation one added/removed record can amount to (see top)."""
    return (2 if sampling == "poisson" else 1) * (k_sub if kind == "subclass" else 1)


def record_level(epsilon: float, delta: float, *, group_size: int) -> dict[str, Any]:
    """Group privacy: (ε, δ) per unit step -> (gε, δ·Σ_{i<g} e^{iε}) per record; None = ∞."""
    g = group_size
    if math.isinf(epsilon):
        d_rec = 1.0
    else:  # δ·(e^{gε} − 1)/(e^ε − 1), in logs so that large gε cannot overflow
        log_sum = (
            math.log(g)
            if epsilon == 0
            else (g - 1) * epsilon
            + math.log(-math.expm1(-g * epsilon))
            - math.log(-math.expm1(-epsilon))
        )
        d_rec = 1.0 if math.log(delta) + log_sum >= 0 else delta * math.exp(log_sum)
    return {
        "epsilon_record": None if d_rec >= 1 else g * epsilon,
        "delta_record": d_rec,
        "record_group_size": g,
        "record_relation": "add/remove one record",
    }


def unit_epsilon(
    *,
    kind: str,
    sampling: str,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    n_units: int,
    accountant: str = "rdp",
    k_sub: int = 1,
) -> dict[str, Any]:
    """Every ε field of a class/subclass run, named by the unit (``epsilon_class`` …), plus what
    it implies per record (``epsilon_record``; ``k_sub`` sets the group size for subclass)."""
    _check("kind", kind in ("class", "subclass"), kind, "class or subclass")
    _check("k_sub", isinstance(k_sub, int) and k_sub >= 1, k_sub, "an integer >= 1")
    _check("unit_sampling", sampling in ("poisson", "fixed"), sampling, "poisson or fixed")
    warning = None
    if sampling == "poisson":
        res = gaussian_epsilon(
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
        )
        eps, used, warning = res.epsilon, res.accountant, res.warning
        relation = f"add/remove one {kind}"
    else:
        eps = fixed_unit_epsilon(
            noise_multiplier=noise_multiplier,
            n_units=n_units,
            units_per_step=units_per_step(sample_rate, n_units),
            steps=steps,
            delta=delta,
        )
        used, relation = "dp_accounting-rdp", f"replace one {kind}"
    out: dict[str, Any] = {
        f"epsilon_{kind}": eps,
        "delta": delta,
        "unit_relation": relation,
        "accountant": used,
        **record_level(
            eps, delta, group_size=record_group_size(kind=kind, sampling=sampling, k_sub=k_sub)
        ),
        **paper3_theorem1(
            noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=delta
        ),
    }
    if warning:
        out["warning"] = warning
    return out


def units_per_step(sample_rate: float, n_units: int) -> int:
    """k for fixed-size unit sampling: round(q·K), at least 1."""
    return max(1, min(n_units, round(sample_rate * n_units)))


def unit_noise_multiplier(
    *,
    target_epsilon: float,
    sampling: str,
    sample_rate: float,
    steps: int,
    delta: float,
    n_units: int,
    accountant: str = "rdp",
) -> float:
    """σ whose unit-level ε (for ``sampling``) is at most ``target_epsilon``."""
    if sampling == "poisson":
        return gaussian_noise_multiplier(
            target_epsilon=target_epsilon,
            sample_rate=sample_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
        )
    k = units_per_step(sample_rate, n_units)

    def eps(sigma: float) -> float:
        return fixed_unit_epsilon(
            noise_multiplier=sigma, n_units=n_units, units_per_step=k, steps=steps, delta=delta
        )

    lo, hi = 0.0, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise PrivtoolError(
                f"target_epsilon={target_epsilon} is not reachable; raise it or delta"
            )
    while hi - lo > 1e-4 * hi:  # σ to 0.01 %, never below the target's
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if eps(mid) > target_epsilon else (lo, mid)
    return hi
