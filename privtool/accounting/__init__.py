"""Privacy accountants: Gaussian DP-SGD (Opacus RDP/PRV) and DirDP-SGD's VMF (sound, replace-one).

Pure maths: numpy/scipy here, Opacus imported inside the functions that call it.
"""

from privtool.accounting.gaussian import (
    ACCOUNTANTS,
    MAX_PRV_GRID_POINTS,
    EpsilonResult,
    gaussian_epsilon,
    gaussian_noise_multiplier,
    prv_grid_points,
)
from privtool.accounting.unit import (
    fixed_unit_epsilon,
    paper3_theorem1,
    record_group_size,
    record_level,
    unit_epsilon,
    unit_noise_multiplier,
    units_per_step,
)
from privtool.accounting.vmf import (
    amplify_without_replacement,
    compose_pure_dp,
    compose_pure_dp_delta,
    kappa_from_nominal,
    vmf_epsilon,
    vmf_kappa_for_epsilon,
    vmf_nominal_epsilon,
    vmf_solve_kappa,
    vmf_step_epsilon,
)

__all__ = [
    "fixed_unit_epsilon",
    "paper3_theorem1",
    "record_group_size",
    "record_level",
    "unit_epsilon",
    "unit_noise_multiplier",
    "units_per_step",
    "ACCOUNTANTS",
    "MAX_PRV_GRID_POINTS",
    "EpsilonResult",
    "amplify_without_replacement",
    "compose_pure_dp",
    "compose_pure_dp_delta",
    "gaussian_epsilon",
    "gaussian_noise_multiplier",
    "kappa_from_nominal",
    "prv_grid_points",
    "vmf_epsilon",
    "vmf_kappa_for_epsilon",
    "vmf_nominal_epsilon",
    "vmf_solve_kappa",
    "vmf_step_epsilon",
]
