"""privtool.audit.estimators: cross-check with jax_privacy, soundness on mechanisms whose ε is
known exactly (randomized response, the scalar Gaussian mechanism), power, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from privtool.audit.estimators import (
    _single_canary_bounds,
    epsilon_many_runs,
    epsilon_one_run,
    gdp_to_epsilon,
    one_run_p_value,
)
from privtool.errors import PrivtoolError

FIXTURE = json.loads(
    (Path(__file__).parent / "fixtures" / "audit" / "jax_privacy.json").read_text()
)


def _stack(case: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    s_in, s_out = np.asarray(case["in"]), np.asarray(case["out"])
    return (
        s_in,
        s_out,
        np.r_[s_in, s_out],
        np.r_[np.ones(s_in.size, bool), np.zeros(s_out.size, bool)],
    )


def test_fixture_names_its_source_and_version():
    assert FIXTURE["version"] and "jax_privacy" in FIXTURE["source"]


@pytest.mark.parametrize("row", FIXTURE["p_values"], ids=lambda r: f"m{r['m']}-r{r['r']}-v{r['v']}")
def test_one_run_p_value_matches_jax_privacy(row):
    p = one_run_p_value(row["m"], row["r"], row["v"], row["epsilon"], row["delta"])
    assert p == pytest.approx(row["p"], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: c["name"])
def test_estimators_match_jax_privacy(case):
    s_in, s_out, scores, member = _stack(case)
    sig, delta = case["significance"], case["delta"]
    for row in case[
        "one_run_explicit"
    ]:  # jax: Explicit(threshold at the k-th score) == our fixed k
        got = epsilon_one_run(scores, member, k=row["k"], confidence=1 - sig, delta=delta)
        assert got.epsilon_lb == pytest.approx(row["epsilon"], abs=2e-6)
    cp1, _ = _single_canary_bounds(s_in, s_out, significance=sig, delta=delta, one_sided=True)
    cp2, gdp2 = _single_canary_bounds(s_in, s_out, significance=sig, delta=delta, one_sided=False)
    assert cp1 == pytest.approx(case["clopper_pearson_one_sided"], rel=1e-9)
    assert cp2 == pytest.approx(case["clopper_pearson_two_sided"], rel=1e-9)
    assert gdp2 == pytest.approx(case["gdp"], abs=1e-5)


def _gaussian_epsilon(sigma: float, delta: float) -> float:
    """True ε of the Gaussian mechanism (sensitivity 1), from dp_accounting's PLD accountant."""
    import dp_accounting

    acc = dp_accounting.pld.PLDAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(noise_multiplier=sigma))
    return float(acc.get_epsilon(delta))


def test_gdp_to_epsilon_matches_dp_accounting():
    for sigma in (0.5, 1.0, 3.0):
        assert gdp_to_epsilon(1 / sigma, 1e-5) == pytest.approx(
            _gaussian_epsilon(sigma, 1e-5), rel=2e-3
        )


def test_one_run_never_exceeds_randomized_response_epsilon():
    """RR at ε: each canary's bit is reported truthfully with probability e^ε/(1 + e^ε); the
    guesser ranks by the report (plus tie-breaking noise). Violations of the true ε at 95 %:
    at most 5 % of repetitions."""
    rng = np.random.default_rng(0)
    eps_true, m, reps = 1.0, 400, 100
    q = math.exp(eps_true) / (1 + math.exp(eps_true))
    bounds = []
    for _ in range(reps):
        member = rng.random(m) < 0.5
        report = np.where(rng.random(m) < q, member, ~member)
        scores = report + 0.01 * rng.random(m)
        bounds.append(
            epsilon_one_run(scores, member, confidence=0.95, delta=0.0, two_sided=True).epsilon_lb
        )
    bounds = np.asarray(bounds)
    assert np.mean(bounds > eps_true) <= 0.05
    assert bounds.max() > 0.3  # the audit has power: not vacuous


def test_one_run_never_exceeds_gaussian_epsilon():
    rng = np.random.default_rng(1)
    sigma, delta, m, reps = 0.5, 1e-5, 1000, 60
    eps_true = _gaussian_epsilon(sigma, delta)
    bounds = []
    for _ in range(reps):
        member = rng.random(m) < 0.5
        scores = member + rng.normal(0, sigma, m)
        bounds.append(epsilon_one_run(scores, member, confidence=0.95, delta=delta).epsilon_lb)
    bounds = np.asarray(bounds)
    assert np.mean(bounds > eps_true) <= 0.05
    assert np.median(bounds) > 1.0  # μ = 2: the one-run audit sees a good part of ε ≈ 8


def test_fixed_k_at_significance_rejects_true_epsilon_at_most_alpha():
    """Without the grid, the p-value itself: at the true ε of RR, P[p ≤ 0.05] ≤ 0.05."""
    rng = np.random.default_rng(2)
    eps_true, m = 0.7, 300
    q = math.exp(eps_true) / (1 + math.exp(eps_true))
    rejections = 0
    for _ in range(400):
        v = int((rng.random(m) < q).sum())  # every canary guessed, each right w.p. q
        rejections += one_run_p_value(m, m, v, eps_true, 0.0) <= 0.05
    assert rejections / 400 <= 0.05


def test_many_runs_never_exceed_gaussian_epsilon():
    """R runs of a scalar Gaussian mechanism with 3 canaries: CP and GDP bounds at 95 %."""
    rng = np.random.default_rng(3)
    sigma, delta, runs, m, reps = 0.6, 1e-5, 400, 3, 40
    eps_true = _gaussian_epsilon(sigma, delta)
    cps, gdps = [], []
    for _ in range(reps):
        member = rng.random((runs, m)) < 0.5
        scores = member + rng.normal(0, sigma, (runs, m))
        res = epsilon_many_runs(scores, member, confidence=0.95, delta=delta)
        cps.append(res["epsilon_lb_clopper_pearson"])
        gdps.append(res["epsilon_lb_gdp"])
    assert np.mean(np.asarray(cps) > eps_true) <= 0.05
    assert np.mean(np.asarray(gdps) > eps_true) <= 0.05
    assert np.median(gdps) > 2.0 and np.median(cps) > 0.5


def test_two_sided_guesses_out_for_the_lowest_scores():
    rng = np.random.default_rng(4)
    member = rng.random(600) < 0.5
    scores = member + rng.normal(0, 0.3, 600)
    two = epsilon_one_run(scores, member, k=100, delta=1e-5, two_sided=True)
    order = np.argsort(-scores)
    assert two.correct == member[order[:50]].sum() + (~member[order[-50:]]).sum()
    assert two.epsilon_lb > 1.0


def test_grid_pays_a_union_bound():
    rng = np.random.default_rng(5)
    member = rng.random(1000) < 0.5
    scores = member + rng.normal(0, 0.7, 1000)
    fixed = epsilon_one_run(scores, member, k=200, delta=1e-5)
    grid = epsilon_one_run(scores, member, k=[100, 200, 500], delta=1e-5)
    if grid.guesses == 200:
        assert grid.epsilon_lb < fixed.epsilon_lb
    assert grid.as_dict()["significance_per_k"] == pytest.approx(0.05 / 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "guesses k"),
        ({"k": 5000}, "guesses k"),
        ({"confidence": 1.0}, "confidence"),
        ({"delta": -1.0}, "delta"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs, match):
    member = np.arange(100) % 2 == 0
    with pytest.raises(PrivtoolError, match=match):
        epsilon_one_run(np.arange(100.0), member, **{"delta": 1e-5, **kwargs})
