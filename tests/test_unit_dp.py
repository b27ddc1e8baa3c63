"""Class- and subclass-level DP-SGD (paper 3, Alg. 2) and its accountant."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import norm
from typer.testing import CliRunner

from privtool.accounting import fixed_unit_epsilon, paper3_theorem1, unit_epsilon
from privtool.cli import app
from privtool.config import TrainConfig
from privtool.errors import PrivtoolError
from privtool.mechanisms import MECHANISMS, Schedule
from privtool.mechanisms.unit import form_units
from privtool.models import build_model


def exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """Tight ε of a μ-GDP mechanism (Balle & Wang 2018 / Dong et al. 2019)."""
    f = lambda e: norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2) - delta
    return brentq(f, 0.0, 500.0) if f(0.0) > 0 else 0.0


@pytest.mark.parametrize("sigma, steps", [(2.0, 10), (4.0, 50), (8.0, 200)])
def test_fixed_all_units_equals_composed_gaussian_with_sensitivity_2S(sigma, steps):
    """k = K (no subsampling): T replace-one releases of sensitivity 2S and noise σS are a
    Gaussian with μ = 2√T/σ; dp_accounting's RDP bound must be above the exact value and close."""
    eps = fixed_unit_epsilon(noise_multiplier=sigma, n_units=20, units_per_step=20, steps=steps,
                             delta=1e-5)
    exact = exact_gaussian_epsilon(2 * math.sqrt(steps) / sigma, 1e-5)
    assert exact <= eps <= 1.35 * exact + 0.05


@pytest.mark.parametrize("sigma, q, steps", [(1.0, 0.2, 100), (1.6, 0.2, 500), (0.8, 0.33, 50)])
def test_poisson_units_is_opacus_rdp(sigma, q, steps):
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    out = unit_epsilon(kind="class", sampling="poisson", noise_multiplier=sigma, sample_rate=q,
                       steps=steps, delta=1e-5, n_units=10)
    assert out["epsilon_class"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)
    assert out["epsilon_record_group2"] == pytest.approx(2 * out["epsilon_class"])
    assert "epsilon" not in out  # the unit is always in the name


def test_subsampling_without_replacement_amplifies():
    full = fixed_unit_epsilon(noise_multiplier=2.0, n_units=50, units_per_step=50, steps=100,
                              delta=1e-5)
    sub = fixed_unit_epsilon(noise_multiplier=2.0, n_units=50, units_per_step=10, steps=100,
                             delta=1e-5)
    assert sub < full


@settings(max_examples=25, deadline=None)
@given(sigma=st.floats(0.5, 5.0), steps=st.integers(1, 400), more=st.integers(1, 400),
       sampling=st.sampled_from(["poisson", "fixed"]))
def test_epsilon_monotone_in_steps_and_sigma(sigma, steps, more, sampling):
    def eps(s, t):
        return unit_epsilon(kind="subclass", sampling=sampling, noise_multiplier=s,
                            sample_rate=0.2, steps=t, delta=1e-5, n_units=50)["epsilon_subclass"]

    assert eps(sigma, steps) <= eps(sigma, steps + more) + 1e-9
    assert eps(sigma * 1.5, steps) <= eps(sigma, steps) + 1e-9


def test_paper3_theorem1_round_trip():
    q, T, delta, eps = 0.01, 1000, 1e-5, 2.0
    sigma = math.sqrt(16 * q**2 * T * math.log(1 / delta) / eps**2)
    out = paper3_theorem1(noise_multiplier=sigma, sample_rate=q, steps=T, delta=delta)
    assert out["epsilon_paper3_theorem1"] == pytest.approx(eps)
    assert out["paper3_theorem1_condition_holds"] == int(q < math.sqrt(eps / (64 * math.sqrt(T * math.log(1 / delta)))))


def test_form_units_deterministic_and_bounded():
    from privtool.data import load_dataset

    d = load_dataset("digits")
    x, y = d.x[:400], d.y[:400]
    a = form_units(y, k_sub=4, seed=1, features=x)
    b = form_units(y, k_sub=4, seed=1, features=x)
    assert np.array_equal(a, b)
    assert len(np.unique(a)) == 40
    for u in np.unique(a):  # a subclass never mixes classes
        assert len(np.unique(y[a == u])) == 1
    assert np.array_equal(form_units(y, k_sub=1, seed=0), y)
    smallest = np.bincount(y).min()
    per_record = form_units(y, k_sub=int(smallest), seed=0, features=x)
    assert len(np.unique(per_record)) == int(smallest) * 10
    with pytest.raises(PrivtoolError, match="k_sub=.* is larger than class"):
        form_units(y, k_sub=int(smallest) + 1, seed=0, features=x)


def test_step_is_sum_of_clipped_unit_means_over_qK():
    """σ = 0 and a huge S: the update is -lr · Σ_units mean gradient of the unit / (qK)."""
    from privtool.data import load_dataset

    d = load_dataset("digits")
    x, y = torch.from_numpy(d.x[:200]), torch.from_numpy(d.y[:200])
    torch.manual_seed(0)
    model = build_model("mlp", d.shape, 10)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(mech="subclass", k_sub=3, noise_multiplier=0.0, max_grad_norm=1e9,
                      batch_size=16, unit_sample_rate=0.5, lr=0.1)
    mech = MECHANISMS.get("subclass")(cfg, Schedule(n=200, batch_size=16, epochs=1))
    mech.prepare(x, y)
    mech.calibrate(model)
    step = mech.make_stepper(model, torch.optim.SGD(model.parameters(), lr=0.1),
                             torch.Generator().manual_seed(0))
    idx = next(mech.batches(1, np.random.default_rng(0)))
    units = mech._batch_units.copy()
    # reference: a micro-batch loop over the sampled units, on a copy of the model
    ref = build_model("mlp", d.shape, 10)
    ref.load_state_dict({k: v for k, v in zip(ref.state_dict(), before)})
    total = [torch.zeros_like(p) for p in ref.parameters()]
    for u in np.unique(units):
        members = idx[units == u]
        ref.zero_grad()
        torch.nn.functional.cross_entropy(ref(x[members]), y[members]).backward()
        for t, p in zip(total, ref.parameters()):
            t += p.grad
    step(x[idx], y[idx])
    for p0, p, t in zip(before, model.parameters(), total):
        torch.testing.assert_close(p0 - p.detach(), 0.1 * t / (0.5 * mech.n_units),
                                   rtol=1e-4, atol=1e-6)


runner = CliRunner()


@pytest.mark.parametrize("mech, extra", [("class", []), ("subclass", ["--set", "train.k_sub=5"])])
def test_train_class_and_subclass_end_to_end(tmp_path, mech, extra):
    out = tmp_path / mech
    res = runner.invoke(app, ["train", "--mech", mech, "--dataset", "digits", "--model", "mlp",
                              "--epochs", "2", "--set", "train.lr=0.05", *extra, "--out", str(out),
                              "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["unit_kind"] == mech and f"epsilon_{mech}" in m and "epsilon" not in m
    assert m["n_units"] == (10 if mech == "class" else 50)
    units = np.load(out / "units.npy")
    assert len(units) == m["n_train"] and units.max() + 1 == m["n_units"]
    meta = json.loads((out / "meta.json").read_text())
    assert "units.npy" in meta["outputs"]
    eps = runner.invoke(app, ["epsilon", "--mech", mech, "--noise-multiplier",
                              str(m["noise_multiplier"]), "--sample-rate", str(m["sample_rate"]),
                              "--steps", str(m["steps"]), "--delta", str(m["delta"]), "--json"])
    assert json.loads(eps.stdout)[f"epsilon_{mech}"] == pytest.approx(m[f"epsilon_{mech}"])


def test_k_sub_larger_than_a_class_is_a_cli_error(tmp_path):
    res = runner.invoke(app, ["train", "--mech", "subclass", "--dataset", "digits", "--set",
                              "train.k_sub=5000", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "k_sub=5000 is larger than class" in res.output
    assert not (tmp_path / "x").exists()
