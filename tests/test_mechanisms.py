"""Mechanisms: the Gaussian path is Opacus' own update; the VMF path is paper 1 Alg. 2."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from privtool.config import TrainConfig
from privtool.errors import PrivtoolError
from privtool.mechanisms import MECHANISMS, Schedule
from privtool.mechanisms.base import fixed_size_batches, poisson_batches
from privtool.mechanisms.vmf import count_parts, privatize_vmf
from privtool.models import build_model


@pytest.fixture(scope="module")
def digits_batch():
    from privtool.data import load_dataset

    d = load_dataset("digits")
    return d, torch.from_numpy(d.x[:32]), torch.from_numpy(d.y[:32])


def _stepper(mech, cfg, model, n=320):
    m = MECHANISMS.get(mech)(cfg, Schedule(n=n, batch_size=cfg.batch_size, epochs=1))
    m.calibrate(model)
    gen = torch.Generator()
    gen.manual_seed(123)
    return m, m.make_stepper(model, torch.optim.SGD(model.parameters(), lr=0.1), gen)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_gaussian_update_is_opacus_update(digits_batch, mode):
    """Same init, batch and noise seed: privtool's step == Opacus make_private's step."""
    from opacus import PrivacyEngine

    d, x, y = digits_batch
    torch.manual_seed(0)
    ours = build_model("lenet", d.shape, 10)
    ref = build_model("lenet", d.shape, 10)
    ref.load_state_dict(ours.state_dict())
    cfg = TrainConfig(
        mech="gaussian",
        batch_size=32,
        noise_multiplier=0.7,
        max_grad_norm=0.5,
        grad_sample_mode=mode,
    )
    _, step = _stepper("gaussian", cfg, ours)
    step(x, y)

    gen = torch.Generator()
    gen.manual_seed(123)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    crit = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = PrivacyEngine().make_private(
            module=ref,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=0.7,
            max_grad_norm=0.5,
            grad_sample_mode=mode,
            poisson_sampling=False,
            criterion=crit,
            noise_generator=gen,
        )
    model, opt = res[0], res[1]
    crit = res[2] if mode == "ghost" else crit
    opt.zero_grad()
    crit(model(x), y).backward()
    opt.step()
    for (k, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def _unit_rows(rows):
    """Rows scaled to unit norm; an all-zero row gets the fixed direction e1 (as privtool)."""
    norms = rows.norm(dim=1, keepdim=True)
    out = rows / norms.clamp_min(1e-30)
    out[norms.squeeze(1) == 0, 0] = 1.0
    return out


def _per_sample_grads(model, x, y):
    grads = []
    for i in range(len(x)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
    return [torch.stack(g) for g in zip(*grads)]


@pytest.mark.parametrize("partition", ["whole", "layer", "row"])
def test_vmf_step_is_mean_of_unit_gradients_at_huge_kappa(digits_batch, partition):
    """κ → ∞ leaves every unit part in place, so the update is -lr · mean of unit parts."""
    d, x, y = digits_batch
    torch.manual_seed(0)
    model = build_model("mlp", d.shape, 10)
    before = [p.detach().clone() for p in model.parameters()]
    gs = _per_sample_grads(model, x, y)
    cfg = TrainConfig(mech="vmf", batch_size=32, kappa=1e12, partition=partition)
    m, step = _stepper("vmf", cfg, model)
    step(x, y)
    if partition == "whole":
        flat = torch.cat([g.reshape(32, -1) for g in gs], 1)
        unit = _unit_rows(flat)
        expect, off = [], 0
        for g in gs:
            k = g[0].numel()
            expect.append(unit[:, off : off + k].reshape(g.shape).mean(0))
            off += k
    else:
        expect = []
        for g in gs:
            rows = (
                g.reshape(32 * g.shape[1], -1)
                if (partition == "row" and g.dim() >= 3)
                else g.reshape(32, -1)
            )
            expect.append(_unit_rows(rows).reshape(g.shape).mean(0))
    for p0, p, e in zip(before, model.parameters(), expect):
        torch.testing.assert_close((p0 - p.detach()) / 0.1, e, rtol=1e-3, atol=1e-4)
    params = list(model.parameters())
    assert m.parts == count_parts(params, partition)
    assert m.parts == {"whole": 1, "layer": 4, "row": 256 + 1 + 10 + 1}[partition]


def test_vmf_release_is_sum_of_unit_vectors_and_noisy_at_small_kappa():
    torch.manual_seed(0)
    g = [torch.randn(64, 5, 3), torch.randn(64, 5)]
    gen = torch.Generator().manual_seed(0)
    out = privatize_vmf(g, kappa=0.0, partition="row", generator=gen)
    # κ = 0: uniform directions; the mean of 64 unit vectors is short and uncorrelated with g
    rows = g[0].reshape(64 * 5, 3)
    mean_unit = (rows / rows.norm(dim=1, keepdim=True)).reshape(64, 5, 3).sum(0)
    assert out[0].shape == (5, 3) and out[1].shape == (5,)
    assert out[0].norm(dim=1).max() <= 64 + 1e-4
    assert torch.nn.functional.cosine_similarity(out[0].flatten(), mean_unit.flatten(), 0) < 0.6
    zero = [torch.zeros(4, 6)]
    out = privatize_vmf(zero, kappa=1e9, partition="whole", generator=gen)
    assert torch.allclose(out[0], torch.tensor([4.0, 0, 0, 0, 0, 0]), atol=1e-3)


def test_samplers():
    rng = np.random.default_rng(0)
    batches = list(fixed_size_batches(100, 10, 50, rng))
    assert all(len(b) == 10 and len(set(b.tolist())) == 10 for b in batches)
    sizes = [len(b) for b in poisson_batches(1000, 0.05, 400, rng)]
    assert abs(np.mean(sizes) - 50) < 2.5  # Binomial(1000, 0.05): sd of the mean ≈ 0.34


def test_vmf_noise_given_twice_or_not_at_all_is_an_error():
    model = build_model("mlp", (1, 8, 8), 10)
    for cfg, match in [
        (TrainConfig(mech="vmf", kappa=1.0, epsilon=2.0), "set twice"),
        (TrainConfig(mech="vmf", epsilon_v=None), "needs its noise level"),
    ]:
        m = MECHANISMS.get("vmf")(cfg, Schedule(n=100, batch_size=10, epochs=1))
        with pytest.raises(PrivtoolError, match=match):
            m.calibrate(model)


def test_vmf_epsilon_target_solves_kappa():
    model = build_model("mlp", (1, 8, 8), 10)
    cfg = TrainConfig(mech="vmf", epsilon=50.0, batch_size=10)
    m = MECHANISMS.get("vmf")(cfg, Schedule(n=1000, batch_size=10, epochs=2))
    m.calibrate(model)
    eps = m.privacy(m.schedule.steps)["epsilon"]
    assert eps <= 50.0 and eps > 45.0


def test_batch_larger_than_data_is_an_error():
    with pytest.raises(PrivtoolError, match="exceeds"):
        Schedule(n=10, batch_size=11, epochs=1)
