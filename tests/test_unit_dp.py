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

from privtool.accounting import fixed_unit_epsilon, paper3_theorem1, record_level, unit_epsilon
from privtool.cli import app
from privtool.config import TrainConfig
from privtool.errors import PrivtoolError
from privtool.mechanisms import MECHANISMS, Schedule
from privtool.mechanisms.unit import form_units
from privtool.models import MODELS, build_model


def exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """Tight ε of a μ-GDP mechanism (Balle & Wang 2018 / Dong et al. 2019)."""

    def f(e):
        return norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2) - delta

    return brentq(f, 0.0, 500.0) if f(0.0) > 0 else 0.0


@pytest.mark.parametrize("sigma, steps", [(2.0, 10), (4.0, 50), (8.0, 200)])
def test_fixed_all_units_equals_composed_gaussian_with_sensitivity_2S(sigma, steps):
    """k = K (no subsampling): T replace-one releases of sensitivity 2S and noise σS are a
    Gaussian with μ = 2√T/σ; dp_accounting's RDP bound must be above the exact value and close."""
    eps = fixed_unit_epsilon(
        noise_multiplier=sigma, n_units=20, units_per_step=20, steps=steps, delta=1e-5
    )
    exact = exact_gaussian_epsilon(2 * math.sqrt(steps) / sigma, 1e-5)
    assert exact <= eps <= 1.35 * exact + 0.05


@pytest.mark.parametrize("sigma, q, steps", [(1.0, 0.2, 100), (1.6, 0.2, 500), (0.8, 0.33, 50)])
def test_poisson_units_is_opacus_rdp(sigma, q, steps):
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    out = unit_epsilon(
        kind="class",
        sampling="poisson",
        noise_multiplier=sigma,
        sample_rate=q,
        steps=steps,
        delta=1e-5,
        n_units=10,
    )
    assert out["epsilon_class"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)
    assert "epsilon" not in out  # the unit is always in the name
    # one record changes one class = remove + add of a unit: group privacy over 2 steps
    e = out["epsilon_class"]
    assert out["record_group_size"] == 2
    d_rec = min(1.0, 1e-5 * (1 + math.exp(e)))
    assert out["delta_record"] == pytest.approx(d_rec)
    assert out["epsilon_record"] == (pytest.approx(2 * e) if d_rec < 1 else None)


def test_record_level_group_sizes():
    """k-means subclasses are recomputed from the private data, so one record can change all
    k_sub subclasses of its class; under the fixed (replace-one-unit) relation a class changes
    in one step."""
    kw = dict(noise_multiplier=3.0, sample_rate=0.2, steps=50, delta=1e-5, n_units=100)
    fixed = unit_epsilon(kind="class", sampling="fixed", **kw)
    assert fixed["record_group_size"] == 1 and fixed["epsilon_record"] == fixed["epsilon_class"]
    assert fixed["delta_record"] == pytest.approx(1e-5)
    sub = unit_epsilon(kind="subclass", sampling="poisson", k_sub=3, **kw)
    e = sub["epsilon_subclass"]
    assert sub["record_group_size"] == 6
    assert sub["epsilon_record"] == pytest.approx(6 * e)
    assert sub["delta_record"] == pytest.approx(1e-5 * sum(math.exp(i * e) for i in range(6)))
    vacuous = unit_epsilon(kind="subclass", sampling="poisson", k_sub=50, **kw)
    assert vacuous["epsilon_record"] is None and vacuous["delta_record"] == 1.0
    assert record_level(math.inf, 1e-5, group_size=2)["epsilon_record"] is None


def _wbk_theorem9_gaussian_rdp(gamma: float, sigma: float, alpha: int) -> float:
    """Wang, Balle & Kasiviswanathan 2019, Thm 9 (general bound, without replacement,
    replace-one) for a Gaussian of noise multiplier σ: ε(j) = j/(2σ²), ε(∞) = ∞."""
    from scipy.special import gammaln, logsumexp

    def log_comb(n, k):
        return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)

    e2 = 1 / sigma**2
    terms = [
        0.0,
        2 * math.log(gamma)
        + log_comb(alpha, 2)
        + min(math.log(4) + math.log(math.expm1(e2)), e2 + math.log(2)),
    ]
    terms += [
        j * math.log(gamma) + log_comb(alpha, j) + math.log(2) + (j - 1) * j / (2 * sigma**2)
        for j in range(3, alpha + 1)
    ]
    return float(logsumexp(terms)) / (alpha - 1)


@pytest.mark.parametrize(
    "sigma, n_units, k, steps",
    [(2.0, 50, 10, 100), (4.0, 500, 100, 200), (3.0, 100, 5, 50), (8.0, 10, 2, 1000)],
)
def test_fixed_subsampled_matches_independent_wbk_bound(sigma, n_units, k, steps):
    """Our fixed-size accountant (dp_accounting, σ/2 for sensitivity 2S) against Theorem 9 of
    WBK19 coded here: it may only be tighter (dp_accounting uses their strengthened Gaussian
    bound), and only slightly."""
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    orders = np.arange(2, 257)
    rdp = np.array(
        [steps * _wbk_theorem9_gaussian_rdp(k / n_units, sigma / 2, int(a)) for a in orders]
    )
    independent = compute_epsilon(orders, rdp, 1e-5)[0]
    ours = fixed_unit_epsilon(
        noise_multiplier=sigma, n_units=n_units, units_per_step=k, steps=steps, delta=1e-5
    )
    assert 0.97 * independent <= ours <= independent * (1 + 1e-9)


def test_subsampling_without_replacement_amplifies():
    full = fixed_unit_epsilon(
        noise_multiplier=2.0, n_units=50, units_per_step=50, steps=100, delta=1e-5
    )
    sub = fixed_unit_epsilon(
        noise_multiplier=2.0, n_units=50, units_per_step=10, steps=100, delta=1e-5
    )
    assert sub < full


@settings(max_examples=25, deadline=None)
@given(
    sigma=st.floats(0.5, 5.0),
    steps=st.integers(1, 400),
    more=st.integers(1, 400),
    sampling=st.sampled_from(["poisson", "fixed"]),
)
def test_epsilon_monotone_in_steps_and_sigma(sigma, steps, more, sampling):
    def eps(s, t):
        return unit_epsilon(
            kind="subclass",
            sampling=sampling,
            noise_multiplier=s,
            sample_rate=0.2,
            steps=t,
            delta=1e-5,
            n_units=50,
        )["epsilon_subclass"]

    assert eps(sigma, steps) <= eps(sigma, steps + more) + 1e-9
    assert eps(sigma * 1.5, steps) <= eps(sigma, steps) + 1e-9


@pytest.mark.parametrize("sampling", ["poisson", "fixed"])
def test_epsilon_target_solves_sigma_without_overshoot(sampling):
    from privtool.accounting import unit_noise_multiplier

    kw = dict(sample_rate=0.2, steps=50, delta=1e-5, n_units=100)
    sigma = unit_noise_multiplier(target_epsilon=5.0, sampling=sampling, **kw)

    def eps(s):
        return unit_epsilon(kind="class", sampling=sampling, noise_multiplier=s, **kw)[
            "epsilon_class"
        ]

    assert eps(sigma) <= 5.0 and eps(0.97 * sigma) > 5.0


def test_paper3_theorem1_round_trip():
    q, T, delta, eps = 0.01, 1000, 1e-5, 2.0
    sigma = math.sqrt(16 * q**2 * T * math.log(1 / delta) / eps**2)
    out = paper3_theorem1(noise_multiplier=sigma, sample_rate=q, steps=T, delta=delta)
    assert out["epsilon_paper3_theorem1"] == pytest.approx(eps)
    assert out["paper3_theorem1_condition_holds"] == int(
        q < math.sqrt(eps / (64 * math.sqrt(T * math.log(1 / delta))))
    )


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


@pytest.mark.parametrize("loop_min_unit", [1, 10**9], ids=["per-unit-backward", "per-sample"])
@pytest.mark.parametrize(
    "batch_size, max_grad_norm", [(16, 1e9), (1, 1e9), (7, 0.05), (1000, 0.05)]
)
def test_step_is_sum_of_clipped_unit_means_over_qK(batch_size, max_grad_norm, loop_min_unit):
    """σ = 0: the update is -lr · Σ_units clip_S(mean gradient of the unit) / (qK), computed
    here by a micro-batch loop, whatever the chunk size (units spanning chunks included) and
    whichever of the two gradient paths the step takes."""
    from privtool.data import load_dataset

    d = load_dataset("digits")
    x, y = torch.from_numpy(d.x[:200]), torch.from_numpy(d.y[:200])
    torch.manual_seed(0)
    model = build_model("mlp", d.shape, 10)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(
        mech="subclass",
        k_sub=3,
        noise_multiplier=0.0,
        max_grad_norm=max_grad_norm,
        batch_size=batch_size,
        unit_sample_rate=0.5,
        lr=0.1,
    )
    mech = MECHANISMS.get("subclass")(cfg, Schedule(n=200, batch_size=16, epochs=1))
    mech.prepare(x, y)
    mech.calibrate(model)
    mech.LOOP_MIN_UNIT = loop_min_unit
    step = mech.make_stepper(
        model, torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator().manual_seed(0)
    )
    idx = next(mech.batches(1, np.random.default_rng(0)))
    units = mech._batch_units.copy()
    assert len(np.unique(units)) > 5
    # reference: a micro-batch loop over the sampled units, on a copy of the model
    ref = build_model("mlp", d.shape, 10)
    ref.load_state_dict({k: v for k, v in zip(ref.state_dict(), before)})
    total = [torch.zeros_like(p) for p in ref.parameters()]
    for u in np.unique(units):
        members = idx[units == u]
        ref.zero_grad()
        torch.nn.functional.cross_entropy(ref(x[members]), y[members]).backward()
        norm = torch.sqrt(sum((p.grad**2).sum() for p in ref.parameters()))
        scale = min(1.0, max_grad_norm / float(norm))
        for t, p in zip(total, ref.parameters()):
            t += scale * p.grad
    step(x[idx], y[idx])
    for p0, p, t in zip(before, model.parameters(), total):
        torch.testing.assert_close(
            p0 - p.detach(), 0.1 * t / (0.5 * mech.n_units), rtol=1e-4, atol=1e-6
        )


def test_step_orders_records_by_unit_and_paths_agree():
    """Records of one unit need not arrive together, and both gradient paths (per-unit
    backward, per-sample sums) give the same update."""
    from privtool.data import load_dataset

    d = load_dataset("digits")
    x, y = torch.from_numpy(d.x[:200]), torch.from_numpy(d.y[:200])
    results = []
    for shuffle, loop_min_unit in ((False, 10**9), (True, 10**9), (True, 1)):
        torch.manual_seed(0)
        model = build_model("mlp", d.shape, 10)
        cfg = TrainConfig(mech="class", noise_multiplier=0.0, batch_size=5, unit_sample_rate=0.5)
        mech = MECHANISMS.get("class")(cfg, Schedule(n=200, batch_size=16, epochs=1))
        mech.prepare(x, y)
        mech.calibrate(model)
        mech.LOOP_MIN_UNIT = loop_min_unit
        step = mech.make_stepper(
            model, torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator().manual_seed(0)
        )
        idx = next(mech.batches(1, np.random.default_rng(3)))
        if shuffle:
            perm = np.random.default_rng(1).permutation(len(idx))
            idx, mech._batch_units = idx[perm], mech._batch_units[perm]
        step(x[idx], y[idx])
        results.append([p.detach().clone() for p in model.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model_name", MODELS.names())
def test_every_registered_model_takes_a_unit_step(model_name):
    from privtool.data import load_dataset

    d = load_dataset("mnist-5k")  # 28×28: every model's kernels fit
    x, y = torch.from_numpy(d.x[:120]), torch.from_numpy(d.y[:120])
    model = build_model(model_name, d.shape, 10)
    cfg = TrainConfig(
        mech="subclass", k_sub=2, batch_size=8, unit_sample_rate=0.5, subclass_features="embeddings"
    )
    mech = MECHANISMS.get("subclass")(cfg, Schedule(n=120, batch_size=8, epochs=1))
    mech.prepare(x, y)
    mech.calibrate(model)
    before = [p.detach().clone() for p in model.parameters()]
    step = mech.make_stepper(
        model, torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator().manual_seed(0)
    )
    idx = next(mech.batches(1, np.random.default_rng(0)))
    loss, _ = step(x[idx], y[idx])
    assert math.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


runner = CliRunner()


@pytest.mark.parametrize("mech, extra", [("class", []), ("subclass", ["--set", "train.k_sub=5"])])
def test_train_class_and_subclass_end_to_end(tmp_path, mech, extra):
    out = tmp_path / mech
    res = runner.invoke(
        app,
        [
            "train",
            "--mech",
            mech,
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--epochs",
            "2",
            "--set",
            "train.lr=0.05",
            *extra,
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["unit_kind"] == mech and f"epsilon_{mech}" in m and "epsilon" not in m
    assert m["record_group_size"] == (2 if mech == "class" else 10)
    assert m["record_relation"] == "add/remove one record" and "epsilon_record" in m
    assert m["n_units"] == (10 if mech == "class" else 50)
    units = np.load(out / "units.npy")
    assert len(units) == m["n_train"] and units.max() + 1 == m["n_units"]
    meta = json.loads((out / "meta.json").read_text())
    assert "units.npy" in meta["outputs"]
    eps = runner.invoke(
        app,
        [
            "epsilon",
            "--mech",
            mech,
            "--noise-multiplier",
            str(m["noise_multiplier"]),
            "--sample-rate",
            str(m["sample_rate"]),
            "--steps",
            str(m["steps"]),
            "--delta",
            str(m["delta"]),
            "--k-sub",
            str(m["k_sub"]),
            "--json",
        ],
    )
    res_eps = json.loads(eps.stdout)
    for key in (f"epsilon_{mech}", "epsilon_record", "delta_record", "epsilon_paper3_theorem1"):
        assert res_eps[key] == pytest.approx(m[key])


def test_k_sub_larger_than_a_class_is_a_cli_error(tmp_path):
    res = runner.invoke(
        app,
        [
            "train",
            "--mech",
            "subclass",
            "--dataset",
            "digits",
            "--set",
            "train.k_sub=5000",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert res.exit_code == 1 and "k_sub=5000 is larger than class" in res.output
    assert not (tmp_path / "x").exists()
