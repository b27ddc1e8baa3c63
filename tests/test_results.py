"""Attack results as objects (issue 18, Deliver 4): every stored metrics.json reads back into its
family's object and writes back unchanged; the objects expose what calibration reads."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from privtool.artifacts import dumps
from privtool.attacks.audit import score_attack
from privtool.errors import PrivtoolError
from privtool.results import (
    RESULTS,
    InversionResult,
    MembershipResult,
    MembershipViews,
    ReconstructionResult,
    RocScores,
    from_json,
)

FIX = Path(__file__).parent / "fixtures" / "calibrate"


def _scored(signal: float, seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(signal, 1, n), rng.normal(0, 1, n)]
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    m, _ = score_attack(scores, member, confidence=0.95, delta=1e-5)
    return m


@pytest.mark.parametrize(
    "name, cls",
    [
        ("attack-loss", MembershipResult),
        ("attack-reference", MembershipResult),
        ("attack-iga", ReconstructionResult),
        ("attack-inversion", InversionResult),
    ],
)
def test_stored_results_read_back_typed_and_write_back_unchanged(name, cls):
    """Results written before this change (no views, no ε bound direction) round-trip exactly,
    every key typed, and the attributes are the stored numbers."""
    d = json.loads((FIX / f"{name}.metrics.json").read_text())
    r = from_json(d)
    assert type(r) is cls and r.kind == d["kind"] and r.attack == d["attack"]
    assert r.to_json() == d and dumps(r.to_json()) == dumps(d)
    assert dict(r.extra) == {}  # nothing left untyped
    assert r.seconds == d["seconds"] and r.target["mechanism"] == d["target_mechanism"]
    assert r.target["epoch"] == d["target_epoch"]
    if cls is MembershipResult:
        assert r.scores.auc == d["auc"] and r.scores.n_in == d["n_in"]
        assert r.scores.tpr_at(0.001) == d["tpr_at_0.1pct_fpr"]
        assert r.scores.epsilon.value == d["epsilon_lower_bound"]
        assert r.scores.epsilon.ci_high == d["epsilon_lower_bound_ci_high"]
        assert r.views is None and r.variants == {}
    elif cls is ReconstructionResult:
        assert (r.ssim, r.mse, r.n_images) == (d["ssim"], d["mse"], d["n_images"])
        assert r.release == {k: v for k, v in d.items() if k.startswith("release")}
    else:
        assert r.mia_distance == d["mia_distance"] and r.variant == d["variant"]


def test_membership_result_writes_the_keys_the_stage_always_wrote():
    """Against the stage's former dict assembly (headline unprefixed, every variant prefixed
    without counts and shared ε settings, store fields, views, the attack's own numbers)."""
    online, offline = _scored(1.0, 0), _scored(0.3, 1)
    store = {"store": "runs/store/x", "n_models": 4, "store_models_trained": 0}
    store["online_models_train_accuracy"] = 0.9
    views = {
        "per_class": {"0": {"n_in": 3, "n_out": 2, "auc": None}},
        "most_exposed_class": None,
        "most_exposed_class_auc": None,
        "records_exposed_at_0.1pct_fpr": 1,
        "records_exposed_at_1pct_fpr": 2,
        "top_exposed_index": [5, 7],
    }
    want = {"attack": "lira", "kind": "membership", "target_mechanism": "none"}
    want["target_epoch"] = None
    want.update(online)
    for variant, m in (("online", online), ("offline", offline)):
        want.update(
            {
                f"{variant}_{k}": v
                for k, v in m.items()
                if not k.startswith("n_") and not k.endswith(("_confidence", "_delta", "_sides"))
            }
        )
    want.update(augment="none", n_queries=1, seed=0, seconds=1.5, eval_test_loss=0.25)
    want.update(store, **views)

    r = MembershipResult(
        scores=RocScores.from_scored(online),
        variants={
            "online": RocScores.from_scored(online),
            "offline": RocScores.from_scored(offline),
        },
        store=store,
        views=MembershipViews.parse(dict(views)),
        augment="none",
        n_queries=1,
        seed=0,
        seconds=1.5,
        eval_test_loss=0.25,
    ).for_target("lira", {"target_mechanism": "none", "target_epoch": None})
    assert r.to_json() == want and dumps(r.to_json()) == dumps(want)
    back = from_json(want)
    assert back == r and set(back.variants) == {"online", "offline"}
    assert back.variants["offline"].auc == offline["auc"]
    assert back.views.records_exposed == {0.001: 1, 0.01: 2}


def test_unbounded_epsilon_ends_are_written_as_null():
    """A perfectly separating attack: the point estimate and the interval's upper end are ∞,
    stored as null, and stay null (not dropped) through the object."""
    m = _scored(50.0, 2)
    assert m["epsilon_lower_bound_point"] is None and m["epsilon_lower_bound_ci_high"] is None
    out = MembershipResult(scores=RocScores.from_scored(m)).to_json()
    assert out["epsilon_lower_bound_point"] is None and "epsilon_lower_bound_ci_high" in out
    assert out == {**m}


def test_unknown_keys_survive_and_unknown_kinds_are_refused():
    d = json.loads((FIX / "attack-iga.metrics.json").read_text())
    d["a_future_number"] = 3.5
    r = from_json(d)
    assert r.extra == {"a_future_number": 3.5} and r.to_json() == d
    with pytest.raises(PrivtoolError, match="attack result kind 'canary'"):
        from_json({**d, "kind": "canary"})
    with pytest.raises(TypeError):  # attacks cannot report an untyped number by mistake
        MembershipResult(not_a_field=1)


def test_every_registered_attack_has_a_result_family_and_reading_needs_no_torch():
    code = (
        "import sys, privtool.results, privtool.calibrate; "
        "print('torch' in sys.modules, 'privtool.attacks' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    from privtool.attacks import ATTACKS

    kinds = {ATTACKS.get(n).kind for n in ATTACKS.names()}
    assert kinds == set(RESULTS) == {"membership", "reconstruction", "inversion"}


def test_real_attack_outputs_are_fully_typed_and_round_trip(tmp_path, digits_run):
    """The stage's metrics.json (and what it returns for --json) of one attack per family on a
    tiny real run: read back into the family's object with no untyped key, written back equal."""
    from privtool.stages import attack as stage

    run = digits_run("--mech", "none").dir  # read-only: attacks write beside their --out
    for name, own, cls in (
        ("loss", {"n_eval": 50}, MembershipResult),
        ("idlg", {"iterations": 2}, ReconstructionResult),
        ("inversion", {"iterations": 3}, InversionResult),
    ):
        out = tmp_path / name
        m = stage.run(name, str(run), out, {"attack": {"n_targets": 2, name: own}})
        assert json.loads((out / "metrics.json").read_text()) == json.loads(dumps(m))
        r = from_json(m)
        assert type(r) is cls and r.attack == name and dict(r.extra) == {}
        assert r.to_json() == m and r.target["mechanism"] == "none" and r.seconds >= 0
