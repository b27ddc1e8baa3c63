"""train.augment (issue 20): the transform against a plain per-image reference, the draws'
dependence on (seed, step, record) only, validation, the store recipe, the query warning, and
stacked store training applying the same augmentation as train_model."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from privtool.attacks.queries import augment_images, queries
from privtool.augment import BatchAugment, query_mismatch, record_keys, shift_mirror, shift_size
from privtool.config import TrainConfig
from privtool.errors import PrivtoolError


def _reference(img, flip, dy, dx):
    """One (C, H, W) image mirrored, then moved by (dy, dx) with reflect padding, pixel by pixel."""
    c, h, w = img.shape
    src = img[:, :, ::-1] if flip else img
    out = np.empty_like(img)

    def reflect(i, n):
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i

    for r in range(h):
        for q in range(w):
            out[:, r, q] = src[:, reflect(r - dy, h), reflect(q - dx, w)]
    return out


def test_shift_mirror_matches_a_per_image_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 2, 7, 9)).astype(np.float32)
    flip = rng.random(12) < 0.5
    dy, dx = rng.integers(-3, 4, 12), rng.integers(-3, 4, 12)
    got = shift_mirror(
        torch.from_numpy(x), torch.from_numpy(flip), torch.from_numpy(dy), torch.from_numpy(dx)
    ).numpy()
    for i in range(12):
        np.testing.assert_array_equal(got[i], _reference(x[i], flip[i], dy[i], dx[i]))
    for q in queries("mirror-shift"):  # the attack's queries are the same transform
        np.testing.assert_array_equal(augment_images(x, q)[3], _reference(x[3], *q))
    assert len(queries("shift")) == 9 and not any(f for f, _, _ in queries("shift"))


def test_shift_size_defaults_and_bounds():
    assert [shift_size(None, (1, n, n)) for n in (8, 28, 32, 64)] == [1, 4, 4, 8]
    assert shift_size(2, (1, 8, 8)) == 2
    with pytest.raises(PrivtoolError, match="train.augment_shift=8 is not allowed"):
        shift_size(8, (1, 8, 8))
    with pytest.raises(PrivtoolError, match="train.augment='flip' is not allowed"):
        TrainConfig(augment="flip")
    with pytest.raises(PrivtoolError, match="train.augment_shift=0 is not allowed"):
        TrainConfig(augment_shift=0)
    assert TrainConfig().augment == "none" and TrainConfig().augment_shift is None


def test_draws_depend_on_seed_step_and_the_record_only():
    """A record's transform is the same whatever batch, position or training set it is in (so
    adding or removing another record changes no other record's transform), differs by step
    and seed, and covers every flip and shift in {-s..s} about evenly."""
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(400, 1, 8, 8)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, 400))
    cfg = TrainConfig(mech="none", augment="mirror-shift", augment_shift=2, seed=5)
    full = BatchAugment.for_run(cfg, x, y)
    sub = BatchAugment.for_run(cfg, x[100:], y[100:])  # a training set without 100 records
    a = full.draw(np.arange(150, 200), step=7)
    b = sub.draw(np.arange(50, 100)[::-1], step=7)  # same records, another order and set
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v[::-1])
    other_step = full.draw(np.arange(150, 200), step=8)
    other_seed = BatchAugment.for_run(replace(cfg, seed=6), x, y).draw(np.arange(150, 200), 7)
    assert not all(np.array_equal(u, v) for u, v in zip(a, other_step))
    assert not all(np.array_equal(u, v) for u, v in zip(a, other_seed))
    flip, dy, dx = full.draw(np.arange(400), step=3)
    assert 0.4 < flip.mean() < 0.6
    for d in (dy, dx):
        counts = np.bincount(d + 2, minlength=5)
        assert len(counts) == 5 and counts.min() > 50  # 400 / 5 = 80 expected each
    assert np.array_equal(record_keys(x, y), record_keys(x.numpy(), y.numpy()))
    none = BatchAugment.for_run(TrainConfig(), x, y)
    shift = BatchAugment.for_run(replace(cfg, augment="shift"), x, y)
    assert none is None and not shift.draw(np.arange(400), 3)[0].any()  # shift: no mirror


def test_training_applies_the_augmentation_for_a_dp_mechanism_with_the_same_epsilon():
    from privtool.data import load_dataset
    from privtool.models import build_model
    from privtool.training import seed_everything, train_model

    d = load_dataset("digits")
    x, y = torch.from_numpy(d.x[:300]), torch.from_numpy(d.y[:300])
    cfg = TrainConfig(
        mech="gaussian", model="mlp", epochs=1, batch_size=50, noise_seed="from-seed", device="cpu"
    )
    outs = {}
    for aug in ("none", "shift"):
        seed_everything(0)
        model = build_model("mlp", d.shape, 10)
        outs[aug] = train_model(
            replace(cfg, augment=aug), model, x, y, x[:10], y[:10], device=torch.device("cpu")
        )
    assert outs["shift"].metrics["epsilon"] == outs["none"].metrics["epsilon"] > 0
    w = [o.model.state_dict() for o in outs.values()]
    assert any(not torch.equal(w[0][k], w[1][k]) for k in w[0])  # the batches were transformed


def test_stacked_store_training_applies_the_same_augmentation():
    """A store's models trained together (vmap) see the records train_model would show them,
    so an augmented recipe's stacked model equals its one-by-one twin (float32 rounding)."""
    from privtool.data import load_dataset
    from privtool.models import build_model
    from privtool.store.stacked import train_stacked
    from privtool.training import seed_everything, train_model

    d = load_dataset("digits")
    rng = np.random.default_rng(0)
    sets = [np.sort(rng.choice(len(d.y), k, replace=False)) for k in (256, 300)]
    cfg = TrainConfig(mech="none", model="mlp", epochs=2, batch_size=128, augment="mirror-shift")
    stacked = train_stacked(cfg, [3, 4], sets, d.x, d.y, d.shape, 10, torch.device("cpu"))
    plain = train_stacked(
        replace(cfg, augment="none"), [3], sets[:1], d.x, d.y, d.shape, 10, torch.device("cpu")
    )[0]
    assert any(not torch.allclose(plain[k], stacked[0][k], atol=1e-3) for k in plain)
    for seed, tr, state in zip([3, 4], sets, stacked):
        seed_everything(seed)
        model = build_model("mlp", d.shape, 10)
        xt, yt = torch.from_numpy(d.x[tr]), torch.from_numpy(d.y[tr])
        out = train_model(
            replace(cfg, seed=seed), model, xt, yt, xt[:2], yt[:2], device=torch.device("cpu")
        )
        for k, v in out.model.state_dict().items():
            assert torch.allclose(state[k], v, atol=1e-5), k


def test_store_recipe_keeps_old_identities_and_separates_augmented_ones():
    from privtool.store.identity import recipe_record

    plain = TrainConfig(mech="none", model="mlp", epochs=60)
    assert recipe_record(plain) == {  # the record stores were built with before the keys
        "mech": "none",
        "model": "mlp",
        "epochs": 60,
        "batch_size": 128,
        "optimizer": "sgd",
        "lr": 0.5,
        "momentum": 0.0,
    }
    assert recipe_record(replace(plain, augment_shift=3)) == recipe_record(plain)
    shifted = recipe_record(replace(plain, augment="shift"))
    assert shifted["augment"] == "shift" and "augment_shift" not in shifted
    assert recipe_record(replace(plain, augment="shift", augment_shift=2))["augment_shift"] == 2
    assert "augment_shift" not in recipe_record(replace(plain, augment="mirror", augment_shift=2))
    dp = recipe_record(TrainConfig(mech="gaussian"))
    assert "augment" not in dp and recipe_record(TrainConfig(augment="mirror"))["augment"]


def test_query_mismatch_warns_only_for_views_never_trained_on():
    assert query_mismatch("none", "none") is None
    assert query_mismatch("mirror-shift", "none") is None
    assert query_mismatch("mirror-shift", "mirror-shift") is None
    assert query_mismatch("mirror-shift", "shift") is None
    assert query_mismatch("shift", "shift") is None
    w = query_mismatch("none", "mirror-shift")
    assert "mirrored and shifted" in w and "train.augment=none" in w and "\n" not in w
    assert "mirrored" in query_mismatch("shift", "mirror-shift")
    assert "shifted" in query_mismatch("mirror", "shift")
