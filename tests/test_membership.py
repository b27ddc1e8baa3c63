"""Membership inference (issue 4): audit maths on known distributions, the attacks as pure
functions, the reference-model store, and the attacks end to end on real MNIST digits."""

import json
import os

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from privtool.attacks import ATTACKS
from privtool.attacks.audit import (
    auc,
    audit_epsilon,
    balanced_accuracy,
    clopper_pearson,
    epsilon_lower_bound,
    roc_curve,
    roc_hull,
    score_attack,
    tpr_at_fpr,
)
from privtool.attacks.membership import (
    cross_entropy,
    evaluation_set,
    lira_offline,
    lira_online,
    reference_alpha,
    reference_scores,
    scaled_logit,
)
from privtool.cli import app
from privtool.errors import PrivtoolError
from privtool.store import KINDS, model_mask

runner = CliRunner()
MEMBERSHIP = ["lira", "loss", "reference", "shokri"]

# mnist-5k (real MNIST digits, embedded) with a shadow pool as large as the training set, so
# reference models train on as many points as the target (paper 1 §5.2).
SPLITS = [
    "--set",
    "data.splits.train=0.2",
    "--set",
    "data.splits.test=0.3",
    "--set",
    "data.splits.shadow=0.4",
    "--set",
    "data.splits.public=0.1",
]
OVERFIT = ["--mech", "none", "--model", "mlp", "--epochs", "20", *SPLITS]
GAUSS1 = [
    "--mech",
    "gaussian",
    "--epsilon",
    "1",
    "--model",
    "mlp",
    "--epochs",
    "20",
    "--set",
    "train.grad_sample_mode=ghost",
    *SPLITS,
]
FAST = ["attack.n_models=4", "attack.workers=1"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def sets(*items):
    return [x for it in items for x in ("--set", it)]


def attack_json(name, target, out, *extra):
    res = invoke(
        "attack", "--attack", name, "--target", target, "--out", out, *sets(*FAST), *extra, "--json"
    )
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


# --------------------------------------------------------------------------- audit maths


def test_roc_exact_on_a_small_example_with_ties():
    from sklearn.metrics import roc_auc_score

    s, m = np.array([3.0, 2, 2, 1, 0.5]), np.array([1, 1, 0, 0, 1], bool)
    roc = roc_curve(s, m)
    assert roc.fpr.tolist() == [0, 0, 0.5, 1, 1] and roc.tpr.tolist() == [0, 1 / 3, 2 / 3, 2 / 3, 1]
    assert auc(roc) == pytest.approx(roc_auc_score(m, s)) == pytest.approx(3.5 / 6)
    assert tpr_at_fpr(roc, 0.4) == pytest.approx(1 / 3)
    # strict "<" on FPR (Carlini et al. 2022; LiRA's code): FPR 0.5 is not below 0.5
    assert tpr_at_fpr(roc, 0.5) == pytest.approx(1 / 3) and tpr_at_fpr(roc, 0.51) == 2 / 3
    assert balanced_accuracy(roc) == pytest.approx(
        max((t + 1 - f) / 2 for f, t in zip(roc.fpr, roc.tpr))
    )


def test_roc_numbers_on_known_gaussian_scores():
    """Members ~ N(d, 1), non-members ~ N(0, 1): AUC = Φ(d/√2), TPR at FPR f =
    1 − Φ(Φ⁻¹(1 − f) − d), best balanced accuracy = Φ(d/2)."""
    rng = np.random.default_rng(0)
    d, n = 1.0, 40000
    s = np.r_[rng.normal(d, 1, n), rng.normal(0, 1, n)]
    m = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    metrics, roc = score_attack(s, m, confidence=0.95, delta=1e-5)
    assert metrics["auc"] == pytest.approx(stats.norm.cdf(d / np.sqrt(2)), abs=0.006)
    assert metrics["balanced_accuracy"] == pytest.approx(stats.norm.cdf(d / 2), abs=0.006)
    for key, f in (("tpr_at_1pct_fpr", 0.01), ("tpr_at_0.1pct_fpr", 0.001)):
        assert metrics[key] == pytest.approx(stats.norm.sf(stats.norm.isf(f) - d), abs=0.015)
    chance, _ = score_attack(rng.normal(size=2 * n), m, confidence=0.95, delta=1e-5)
    assert abs(chance["auc"] - 0.5) < 0.01 and chance["epsilon_lower_bound"] < 0.05


def test_clopper_pearson_matches_scipy_exact_interval():
    for k, n in [(0, 50), (3, 50), (25, 50), (50, 50), (17, 1000)]:
        lo, hi = clopper_pearson(k, n, 0.025)
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert float(lo) == pytest.approx(ci.low, abs=1e-9)
        assert float(hi) == pytest.approx(ci.high, abs=1e-9)


def test_tpr_at_low_fpr_allows_no_false_positive_at_the_rate_itself():
    """1,000 non-members, one scored above every member but one: at 0.1 % FPR (one false
    positive would be FPR = 0.001, not below it) the TPR is that of the thresholds above the
    false positive, as LiRA's ``tpr[np.where(fpr < .001)[0][-1]]`` computes it."""
    n = 1000
    s_in = np.r_[5.0, np.linspace(0, 1, n - 1)]
    s_out = np.r_[4.0, np.linspace(-1, 0.5, n - 1)]
    s, m = np.r_[s_in, s_out], np.r_[np.ones(n, bool), np.zeros(n, bool)]
    roc = roc_curve(s, m)
    lira_code = roc.tpr[np.where(roc.fpr < 0.001)[0][-1]]
    assert tpr_at_fpr(roc, 0.001) == lira_code == pytest.approx(1 / n)
    assert score_attack(s, m, confidence=0.95, delta=1e-5)[0]["tpr_at_0.1pct_fpr"] == 1 / n


def test_epsilon_lower_bound_is_one_sided_by_default_and_names_its_direction():
    """Every member scores 1, half the non-members too: the ROC is (0,0), (½,1), (1,1). The
    member test (TPR ≤ e^ε·FPR + δ) gives at most log 2; the non-member one (TNR ≤ e^ε·FNR + δ)
    is limited only by the Clopper–Pearson bound on 0 false negatives. One-sided (default)
    reports the first with its direction, two-sided the second, each its closed form."""
    n, conf, delta = 200, 0.95, 1e-5
    s = np.r_[np.ones(n), np.ones(n // 2), np.zeros(n // 2)]
    m = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    roc = roc_curve(s, m)
    sig = (1 - conf) / 2 / len(roc_hull(roc))
    fpr_u = stats.beta.ppf(1 - sig, n // 2 + 1, n // 2)  # CP upper bound of (n/2) / n
    fnr_u = 1 - sig ** (1 / n)  # CP upper bound of 0 / n
    one = epsilon_lower_bound(roc, confidence=conf, delta=delta)
    assert one["epsilon_lower_bound"] == pytest.approx(np.log((1 - delta - fnr_u) / fpr_u))
    assert one["epsilon_lower_bound_sides"] == "one-sided"
    assert one["epsilon_lower_bound_direction"] == "member: TPR/FPR"
    two = epsilon_lower_bound(roc, confidence=conf, delta=delta, sides="two-sided")
    assert two["epsilon_lower_bound"] == pytest.approx(np.log((1 - delta - fpr_u) / fnr_u))
    assert two["epsilon_lower_bound_direction"] == "non-member: TNR/FNR"
    assert two["epsilon_lower_bound"] > 2 > one["epsilon_lower_bound"]
    with pytest.raises(PrivtoolError, match="epsilon_sides"):
        epsilon_lower_bound(roc, confidence=conf, delta=delta, sides="both")


def test_epsilon_lower_bound_of_perfect_separation_is_the_closed_form():
    n, conf, delta = 100, 0.95, 1e-5
    roc = roc_curve(np.r_[np.ones(n), np.zeros(n)], np.r_[np.ones(n, bool), np.zeros(n, bool)])
    assert len(roc_hull(roc)) == 3  # (0,0), (0,1), (1,1)
    sig = (1 - conf) / 2 / 3  # two rates, Bonferroni over 3
    fpr_u = 1 - sig ** (1 / n)  # CP upper bound of 0 / n
    want = np.log((1 - delta - fpr_u) / fpr_u)
    got = epsilon_lower_bound(roc, confidence=conf, delta=delta)
    assert got["epsilon_lower_bound"] == pytest.approx(want, rel=1e-9)
    assert got["epsilon_lower_bound_point"] is None  # raw rates: ∞


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_epsilon_lower_bound_of_randomized_response_is_tight_and_sound(eps):
    """ε-DP randomized response: 'member' with probability e^ε/(1+e^ε) for members and
    1/(1+e^ε) for non-members. The bound never exceeds ε and comes close with many trials."""
    p = np.exp(eps) / (1 + np.exp(eps))
    for seed in range(5):
        rng = np.random.default_rng(seed)
        n = 20000
        s_in, s_out = rng.random(n) < p, rng.random(n) < 1 - p
        lb = audit_epsilon(s_in.astype(float), s_out.astype(float), confidence=0.95, delta=1e-5)
        assert 0.85 * eps < lb <= eps


# --------------------------------------------------------------------------- pure attacks


def test_losses_and_scaled_logits_are_stable_and_exact():
    z = np.array([[2.0, 1.0, 0.0], [1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    y = np.array([0, 0, 2])
    ref = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(y), reduction="none")
    assert np.allclose(cross_entropy(z, y), ref.numpy())
    p = np.exp(z[0]) / np.exp(z[0]).sum()
    phi = scaled_logit(z, y)
    assert phi[0] == pytest.approx(np.log(p[0]) - np.log(1 - p[0]))
    assert phi[1] == pytest.approx(1000.0) and np.isfinite(phi).all()
    assert phi[2] == pytest.approx(np.log(1 / 3) - np.log(2 / 3))
    assert scaled_logit(np.stack([z, z]), y).shape == (2, 3)  # (N, n, C) signals


def test_reference_alpha_inverts_numpy_quantiles():
    rng = np.random.default_rng(1)
    ref = rng.exponential(size=(8, 200))
    out = np.ones_like(ref, bool)
    out[:3, :50] = False  # some points have 5 references
    t = rng.exponential(size=200)
    alpha = reference_alpha(t, ref, out)
    for j in range(200):
        r = ref[out[:, j], j]
        if r.min() < t[j] < r.max():
            assert np.quantile(r, alpha[j]) == pytest.approx(t[j])
        else:
            assert alpha[j] == (0.0 if t[j] <= r.min() else 1.0)
    score, a = reference_scores(t, ref, out)
    assert np.array_equal(a, alpha) and np.array_equal(score, -alpha)
    # exact ties in (α, loss) — e.g. losses rounded to 0 below every reference — tie in score:
    # an order-dependent tie-break would leak the evaluation set's in-then-out layout
    t2 = np.r_[np.zeros(5), t[5:]]
    s2, _ = reference_scores(t2, ref, out)
    assert len(np.unique(s2[:5])) == 1 and (s2[5:] <= s2[0]).all()


def test_reference_ties_in_alpha_are_neutral():
    """Every target loss below every reference loss: α = 0 for all, the attack cannot tell
    members apart and its AUC is exactly ½ (Mann–Whitney, ties one half), whatever the raw
    losses say; a loss tie-break would report Yeom's AUC instead."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    n = 200
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    t = np.r_[rng.uniform(0.0, 0.05, n), rng.uniform(0.02, 0.1, n)]  # members: lower loss
    ref = rng.uniform(1.0, 2.0, size=(4, 2 * n))
    score, alpha = reference_scores(t, ref, np.ones_like(ref, bool))
    assert (alpha == 0).all()
    assert score_attack(score, member, confidence=0.95, delta=1e-5)[0]["auc"] == 0.5
    # mixed: α differs for some points and ties for the rest; AUC = Mann–Whitney on −α
    t[::7] = 1.5
    score, alpha = reference_scores(t, ref, np.ones_like(ref, bool))
    got = score_attack(score, member, confidence=0.95, delta=1e-5)[0]["auc"]
    assert got == pytest.approx(roc_auc_score(member, -alpha), abs=1e-12)


def test_lira_and_reference_separate_a_known_shift():
    """Per-point difficulty μ_x shared by every model; training on x adds +1 to φ."""
    rng = np.random.default_rng(2)
    n, N = 2000, 16
    mu = rng.normal(0, 3, n)
    member = rng.random(n) < 0.5
    ref_in = np.zeros((N, n), bool)
    ref_in[::2] = rng.random((N // 2, n)) < 0.5
    ref_in[1::2] = ~ref_in[::2]
    ref_phi = mu + ref_in + rng.normal(0, 0.3, (N, n))
    target = mu + member + rng.normal(0, 0.3, n)
    for s in (
        lira_online(target, ref_phi, ref_in),
        lira_offline(target, ref_phi, ~ref_in),
        reference_scores(-target, -ref_phi, ~ref_in)[0],
    ):
        assert score_attack(s, member, confidence=0.95, delta=1e-5)[0]["auc"] > 0.9
    global_only = score_attack(-(-target), member, confidence=0.95, delta=1e-5)[0]["auc"]
    assert global_only < 0.7  # difficulty hides a global threshold


def test_store_masks_are_complementary_pairs():
    points = np.arange(100)
    pool = np.arange(10, 90)
    masks = np.stack([model_mask(points, pool, "online", 0, m) for m in range(6)])
    assert not masks[:, :10].any() and not masks[:, 90:].any()
    assert np.array_equal(masks[0], ~masks[1] & np.isin(points, pool))
    assert (masks[:, 10:90].sum(0) == 3).all()  # each pool point in half
    assert np.array_equal(masks[2], model_mask(points, pool, "online", 0, 2))
    assert not np.array_equal(masks[0], model_mask(points, pool, "online", 1, 0))
    assert not np.array_equal(masks[0], model_mask(points, pool, "offline", 0, 0))
    assert KINDS == ("offline", "online")


@pytest.mark.parametrize("optimizer, lr, momentum", [("sgd", 0.5, 0.9), ("adam", 0.01, 0.0)])
def test_stacked_training_equals_one_by_one(optimizer, lr, momentum):
    """Models trained together (vmap) equal train_model's, batch for batch, also when their
    training sets differ in size (a model without a batch at some step must not move)."""
    from dataclasses import replace

    from privtool.config import TrainConfig
    from privtool.data import load_dataset
    from privtool.models import build_model
    from privtool.store.stacked import train_stacked
    from privtool.training import seed_everything, train_model

    d = load_dataset("digits")
    rng = np.random.default_rng(0)
    sets = [np.sort(rng.choice(len(d.y), k, replace=False)) for k in (256, 300, 384)]
    cfg = TrainConfig(
        mech="none",
        model="mlp",
        epochs=2,
        batch_size=128,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
    )
    stacked = train_stacked(cfg, [3, 4, 5], sets, d.x, d.y, d.shape, 10, torch.device("cpu"))
    for seed, tr, state in zip([3, 4, 5], sets, stacked):
        seed_everything(seed)
        model = build_model("mlp", d.shape, 10)
        x, y = torch.from_numpy(d.x[tr]), torch.from_numpy(d.y[tr])
        out = train_model(
            replace(cfg, seed=seed), model, x, y, x[:2], y[:2], device=torch.device("cpu")
        )
        for k, v in out.model.state_dict().items():
            assert torch.allclose(state[k], v, atol=1e-5), k


def test_stacked_and_one_by_one_differ_only_by_float_rounding():
    """Why stacked (vmap) and per-process store logits differ (by up to ~0.03 after 30 epochs
    of the overfit MLP recipe in float32): vmap's batched matmuls sum in another order than one
    model's, a ~1e-7 relative rounding difference per step, which SGD at lr 0.5 amplifies over
    many epochs. In float64 the same long recipe agrees to 1e-9 (the same algorithm, batch for
    batch); in float32 a short recipe stays within 1e-4."""
    from dataclasses import replace

    from privtool.config import TrainConfig
    from privtool.data import load_dataset
    from privtool.models import build_model
    from privtool.store.stacked import train_stacked
    from privtool.training import seed_everything, train_model

    d = load_dataset("digits")
    sets = [np.arange(0, 600), np.arange(600, 1200)]
    ev = torch.from_numpy(d.x[1200:1500])

    def max_logit_gap(cfg, dtype):
        x = d.x.astype(np.float64 if dtype == torch.float64 else np.float32)
        stacked = train_stacked(cfg, [1, 2], sets, x, d.y, d.shape, 10, torch.device("cpu"))
        gap = 0.0
        for seed, tr, state in zip([1, 2], sets, stacked):
            seed_everything(seed)
            model = build_model(cfg.model, d.shape, 10)
            xt, yt = torch.from_numpy(x[tr]), torch.from_numpy(d.y[tr])
            one = train_model(
                replace(cfg, seed=seed), model, xt, yt, xt[:2], yt[:2], device=torch.device("cpu")
            ).model.eval()
            twin = build_model(cfg.model, d.shape, 10)
            twin.load_state_dict(state)
            with torch.no_grad():
                gap = max(gap, float((one(ev.to(dtype)) - twin.eval()(ev.to(dtype))).abs().max()))
        return gap

    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        long = TrainConfig(mech="none", model="mlp", epochs=30, batch_size=128, lr=0.5)
        assert max_logit_gap(long, torch.float64) < 1e-9
    finally:
        torch.set_default_dtype(default)
    short = TrainConfig(mech="none", model="mlp", epochs=2, batch_size=128, lr=0.5)
    assert max_logit_gap(short, torch.float32) < 1e-4


def test_evaluation_set_is_balanced_and_recorded_by_index():
    splits = {"train": np.arange(0, 50), "test": np.arange(50, 80)}
    idx, member = evaluation_set(splits, None, 0)
    assert member.sum() == 30 and (~member).sum() == 30
    assert np.isin(idx[member], splits["train"]).all()
    assert np.isin(idx[~member], splits["test"]).all()
    assert np.array_equal(idx, evaluation_set(splits, None, 0)[0])
    assert len(evaluation_set(splits, 10, 0)[0]) == 20


@pytest.mark.parametrize("name", MEMBERSHIP)
def test_every_membership_attack_is_registered_with_checked_options(name):
    cls = ATTACKS.get(name)
    assert cls.kind == "membership"
    from privtool.attacks.base import attack_settings
    from privtool.errors import PrivtoolError

    cfg, own = attack_settings({name: {}}, name)
    cls(cfg, own)
    with pytest.raises(PrivtoolError, match=f"unknown params key attack.{name}.bogus"):
        cls(cfg, {"bogus": 1})
    with pytest.raises(PrivtoolError, match=f"attack.{name}.n_eval=0 is not allowed"):
        cls(cfg, {"n_eval": 0})


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A project folder (runs/store/ is relative) with trained runs on real MNIST digits:
    an overfit non-private MLP, a Gaussian ε = 1 MLP, and a quick digits run."""
    import privtool.data

    root = tmp_path_factory.mktemp("mia")
    cwd, threads = os.getcwd(), torch.get_num_threads()
    load, cache = privtool.data.load_dataset, {}

    def load_once(name, root=None, *, download=False, image_size=None):
        """Each attack reloads its target's data; read each set once per module (mnist-5k's
        CSV takes seconds to parse)."""
        key = (name, str(root), image_size)
        if key not in cache:
            cache[key] = load(name, root, download=download, image_size=image_size)
        return cache[key]

    os.chdir(root)
    torch.set_num_threads(1)  # small models: one thread, no contention with the progress bar
    privtool.data.load_dataset = load_once
    try:
        runs = {}
        for name, args in {
            "none": OVERFIT,
            "gauss": GAUSS1,
            "digits": ["--dataset", "digits", "--model", "mlp", "--epochs", "3", "--mech", "none"],
        }.items():
            res = invoke("train", *args, "--out", root / "runs" / name)
            assert res.exit_code == 0, res.output
            runs[name] = root / "runs" / name
        yield root, runs
    finally:
        privtool.data.load_dataset = load
        os.chdir(cwd)
        torch.set_num_threads(threads)


def test_reference_attack_json_beats_chance_on_overfit_and_not_on_gaussian(work):
    root, runs = work
    m = attack_json("reference", runs["none"], root / "att" / "ref-none")
    for key in (
        "auc",
        "tpr_at_0.1pct_fpr",
        "tpr_at_1pct_fpr",
        "balanced_accuracy",
        "epsilon_lower_bound",
        "epsilon_lower_bound_ci_high",
        "n_models",
        "target_mechanism",
    ):
        assert key in m
    assert m["n_models"] == 4 and m["store_models_trained"] == 4
    assert m["auc"] > 0.58, m["auc"]
    assert m["n_in"] == m["n_out"] == 1000
    out = root / "att" / "ref-none"
    assert (out / "roc.png").stat().st_size > 1000
    assert (out / "plots" / "roc.csv").read_text().startswith("fpr,tpr,threshold")
    with np.load(out / "scores.npz") as z:
        splits = np.load(runs["none"] / "splits.npz")
        assert np.isin(z["index"][z["member"]], splits["train"]).all()
        assert np.isin(z["index"][~z["member"]], splits["test"]).all()
        assert z["score_reference"].shape == z["index"].shape == z["alpha"].shape

    g = attack_json("reference", runs["gauss"], root / "att" / "ref-gauss")
    assert g["store_models_trained"] == 0 and g["store"] == m["store"]  # one shared store
    assert g["target_mechanism"] == "gaussian" and g["target_epsilon"] <= 1.0
    assert abs(g["auc"] - 0.5) < 0.05, g["auc"]
    assert g["epsilon_lower_bound"] <= g["target_epsilon"]


def test_lira_loss_shokri_on_overfit_model(work):
    root, runs = work
    lira = attack_json("lira", runs["none"], root / "att" / "lira")
    assert lira["online_auc"] == lira["auc"] and lira["offline_auc"] > 0.55 and lira["auc"] > 0.55
    assert lira["store_models_trained"] == 4  # only the online models
    assert (root / "att" / "lira" / "plots" / "roc_offline.csv").is_file()
    loss = attack_json("loss", runs["none"], root / "att" / "loss")
    assert loss["auc"] > 0.53 and "store" not in loss and 0.5 < loss["yeom_accuracy"] < 1
    shokri = attack_json("shokri", runs["none"], root / "att" / "shokri")
    assert shokri["store_models_trained"] == 0  # non-DP target: same store
    assert shokri["auc"] > 0.53 and 0 <= shokri["attack_accuracy"] <= 1


def test_store_resumes_extends_and_fans_out_over_processes(work):
    root, runs = work
    store = root / "stores" / "digits"
    base = ["store", "--target", runs["digits"], "--out", store, "--json"]
    res = invoke(*base, *sets("attack.n_models=2", "attack.workers=2"))  # 2 processes
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["store_models_trained"] == 2
    res = invoke(*base, *sets("attack.n_models=4", "attack.workers=1"))  # extend by two
    assert json.loads(res.stdout)["store_models_trained"] == 2
    (store / "offline" / "m0001.npz").unlink()  # a killed run...
    (store / "offline" / "m0002.npz").write_bytes(b"truncated")  # ...and a torn file
    res = invoke(*base, *sets("attack.n_models=4", "attack.workers=1"))
    assert json.loads(res.stdout)["store_models_trained"] == 2
    res = invoke(*base, *sets("attack.n_models=4"))
    assert json.loads(res.stdout)["store_models_trained"] == 0
    meta = json.loads((store / "store.json").read_text())
    assert meta["identity"]["dataset"] == "digits" and meta["n_models"]["offline"] == 4
    with np.load(store / "offline" / "signals.npz") as z:
        assert z["logits"].shape[:2] == z["in"].shape == (4, len(z["points"]))
    m = attack_json(
        "reference", runs["digits"], root / "att" / "ref-digits", "--set", f"attack.store={store}"
    )
    assert m["store"] == str(store) and m["store_models_trained"] == 0


def test_store_on_ray_equals_the_local_processes(work):
    """attack.backend=ray (SPEC §11): the same models, trained as Ray tasks on a local Ray,
    as the local process pool gives (same seeds, one thread each); then a resume on Ray."""
    pytest.importorskip("ray")
    root, runs = work
    stores = {b: root / "stores" / f"digits-{b}" for b in ("local", "ray")}
    for backend, store in stores.items():
        res = invoke(
            "store",
            "--target",
            runs["digits"],
            "--out",
            store,
            "--json",
            *sets("attack.n_models=2", "attack.workers=2", f"attack.backend={backend}"),
        )
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["store_models_trained"] == 2
    with (
        np.load(stores["local"] / "offline" / "signals.npz") as a,
        np.load(stores["ray"] / "offline" / "signals.npz") as b,
    ):
        assert np.array_equal(a["in"], b["in"]) and np.array_equal(a["points"], b["points"])
        np.testing.assert_allclose(a["logits"], b["logits"], rtol=0, atol=1e-5)
    (stores["ray"] / "offline" / "m0001.npz").unlink()  # a killed run
    res = invoke(
        "store",
        "--target",
        runs["digits"],
        "--out",
        stores["ray"],
        "--json",
        *sets("attack.n_models=2", "attack.workers=1", "attack.backend=ray"),
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["store_models_trained"] == 1


def test_unknown_store_backend_is_one_line_exit_1(work):
    root, runs = work
    res = invoke(
        "store",
        "--target",
        runs["digits"],
        "--out",
        root / "stores" / "bad-backend",
        *sets("attack.backend=dask"),
    )
    assert res.exit_code == 1 and "attack.backend='dask' is not allowed: local or ray" in res.output
    assert not (root / "stores" / "bad-backend").exists()


@pytest.mark.parametrize(
    "case", ["other-dataset", "too-small", "missing-run", "no-store", "online-missing"]
)
def test_bad_input_is_one_line_exit_1(work, case):
    root, runs = work
    digits_store = root / "stores" / "digits-small"
    res = invoke(
        "store",
        "--target",
        runs["digits"],
        "--out",
        digits_store,
        *sets("attack.n_models=2", "attack.workers=1"),
    )
    assert res.exit_code == 0, res.output
    target, extra, match = {
        "other-dataset": (
            runs["none"],
            [f"attack.store={digits_store}"],
            "holds models of dataset 'digits', but target",
        ),
        "too-small": (
            runs["digits"],
            [f"attack.store={digits_store}", "attack.n_models=3"],
            "holds 2 complete offline models, attack.n_models=3 asks for 3",
        ),
        "missing-run": (root / "runs" / "nope", [], "does not exist"),
        "no-store": (runs["digits"], [f"attack.store={root / 'nostore'}"], "is not a model store"),
        "online-missing": (
            runs["digits"],
            [f"attack.store={digits_store}", "attack.n_models=2"],
            "complete online models",
        ),
    }[case]
    name = "lira" if case == "online-missing" else "reference"
    out = root / "att" / f"bad-{case}"
    res = invoke(
        "attack",
        "--attack",
        name,
        "--target",
        target,
        "--out",
        out,
        *sets("attack.workers=1", *extra),
    )
    assert res.exit_code == 1, res.output
    assert match in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


# --------------------------------------------------------------------------- audit self-test


def _canary_scores(mech: str, n_runs: int, digits) -> tuple[np.ndarray, np.ndarray, float]:
    """Train ``n_runs`` models with and ``n_runs`` without one canary (an inverted, mislabelled
    digit: easy to memorise, unlike any other point); return the canary's −loss under each
    and the accounted ε (Jagielski et al. 2020's audit)."""
    from privtool.config import TrainConfig
    from privtool.models import build_model
    from privtool.training import train_model

    rng = np.random.default_rng(0)
    idx = rng.choice(len(digits.y), 257, replace=False)
    x, y = torch.from_numpy(digits.x[idx]).clone(), torch.from_numpy(digits.y[idx]).clone()
    x[0], y[0] = 1 - x[0], (y[0] + 1) % 10  # the canary
    extra = dict(epsilon=1.0, grad_sample_mode="ghost") if mech == "gaussian" else {}
    scores: dict[bool, list[float]] = {True: [], False: []}
    eps = None
    for with_canary in (True, False):
        keep = slice(0, None) if with_canary else slice(1, None)
        for r in range(n_runs):
            cfg = TrainConfig(
                mech=mech, model="mlp", epochs=30, batch_size=64, lr=0.5, seed=r, **extra
            )
            torch.manual_seed(r)
            model = build_model("mlp", digits.shape, 10)
            out = train_model(
                cfg, model, x[keep], y[keep], x[1:2], y[1:2], device=torch.device("cpu")
            )
            with torch.no_grad():
                logit = out.model(x[:1])
            scores[with_canary].append(-float(cross_entropy(logit.numpy(), y[:1].numpy())[0]))
            eps = out.metrics.get("epsilon")
    return np.array(scores[True]), np.array(scores[False]), eps


@pytest.mark.slow
def test_audit_never_exceeds_the_accounted_epsilon_of_a_gaussian_run():
    """Many-run audit of one canary: a non-private model gives a clearly positive bound (the
    audit has power), a Gaussian ε = 1 run a bound below its accounted ε (no accounting bug
    can hide behind the attack)."""
    from privtool.data import load_dataset

    torch.set_num_threads(1)
    digits = load_dataset("digits")
    s_in, s_out, _ = _canary_scores("none", 24, digits)
    assert audit_epsilon(s_in, s_out, confidence=0.95, delta=1e-5) > 0.8  # ≤ 1.51 at 24 runs
    s_in, s_out, eps = _canary_scores("gaussian", 24, digits)
    assert 0.9 < eps <= 1.0
    assert audit_epsilon(s_in, s_out, confidence=0.95, delta=1e-5) <= eps
