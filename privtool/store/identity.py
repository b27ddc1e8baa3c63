"""Store identity: what a reference/shadow model store is *of*, in one place.

This room holds the recipe a store's models train with (the target's own, or its non-DP
version), the recipe record whose equality means "the same models", the identity a store must
share with a target to serve it (dataset, fingerprint, splits, recipe, seed), the default
directory named by the identity's hash, the identity check, and the deterministic assignment of
points and seeds to models (the complementary-pair masks). A new key that changes how store
models train (e.g. train-time augmentation) belongs in :func:`recipe_record` and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from privtool.augment import shifts
from privtool.errors import PrivtoolError
from privtool.mechanisms.base import NON_PRIVATE, is_private

FORMAT = 1
KINDS = ("offline", "online")
DEFAULT_ROOT = Path("runs") / "store"
# What a non-DP model's training depends on (the rest of TrainConfig is DP noise/accounting,
# bookkeeping, or the per-model seed).
NON_DP_KEYS = ("model", "epochs", "batch_size", "optimizer", "lr", "momentum")
NOT_RECIPE = ("seed", "device", "eval_batch_size", "checkpoint_every", "noise_seed")
# Recipe keys added after stores were recorded: in the record only away from their default,
# so an older store (and its directory hash) stays the identity of the recipe it was built for.
LATER_KEYS = {"augment": "none", "augment_shift": None}


def recipe_config(train: Any, role: str) -> Any:
    """The TrainConfig store models train with: the target's own (``shadow``) or its non-DP
    version (``reference``)."""
    if role == "reference" and is_private(train.mech):
        return replace(train, mech=NON_PRIVATE, epsilon=None)
    if role not in ("reference", "shadow"):
        raise PrivtoolError(f"store role {role!r} is not allowed: reference or shadow")
    return train


def target_recipe(target: Any, role: str) -> Any:
    """:func:`recipe_config` of the target's run, stopped at the attacked checkpoint's epoch
    for a ``RUN_DIR@EPOCH`` target."""
    cfg = recipe_config(target.params.train, role)
    if target.epoch is not None and target.epoch < cfg.epochs:
        cfg = replace(cfg, epochs=int(target.epoch))
    return cfg


def recipe_record(train: Any) -> dict[str, Any]:
    """The recipe fields that decide how a store model trains (so equal records = same
    models). Non-private recipes keep only the optimisation keys."""
    d = asdict(train)
    later = {k: d[k] for k, default in LATER_KEYS.items() if d.get(k, default) != default}
    if not shifts(d.get("augment", "none")):
        later.pop("augment_shift", None)  # the shift size matters only when shifting
    if d.get("mech") is not None and not is_private(d["mech"]):
        return {"mech": d["mech"], **{k: d[k] for k in NON_DP_KEYS}, **later}
    kept = {k: v for k, v in d.items() if k not in NOT_RECIPE and k not in LATER_KEYS}
    return dict(sorted({**kept, **later}.items()))


def store_identity(target: Any, role: str, seed: int) -> dict[str, Any]:
    """What a store must agree on with a target to be usable for it."""
    from privtool.data import index_hash

    recipe = recipe_record(target_recipe(target, role))
    return {
        "format": FORMAT,
        "dataset": target.data.name,
        "fingerprint": target.data.fingerprint(),
        "split_seed": target.params.data.split_seed,
        "splits": {k: index_hash(target.splits[k]) for k in ("shadow", "train", "test")},
        "model": recipe["model"],
        "recipe": recipe,
        "seed": int(seed),
    }


def default_store_dir(identity: dict[str, Any], root: Path = DEFAULT_ROOT) -> Path:
    """``runs/store/<dataset>-<model>-<hash of the identity>``."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in identity["dataset"])
    return root / f"{safe}-{identity['model']}-{digest}"


def resolve_store_dir(target: Any, cfg: Any, role: str) -> tuple[Path, dict[str, Any], bool]:
    """(store dir, identity it must have, whether it was named explicitly by attack.store)."""
    identity = store_identity(target, role, cfg.seed)
    if cfg.store:
        return Path(cfg.store), identity, True
    return default_store_dir(identity), identity, False


def check_identity(
    store_dir: Path, have: dict[str, Any], want: dict[str, Any], target: Any
) -> None:
    """Refuse (one line) a store whose identity ``have`` differs from the target's ``want``."""
    if have.get("dataset") != want["dataset"]:
        raise PrivtoolError(
            f"store {store_dir} holds models of dataset {have.get('dataset')!r}, "
            f"but target {target.dir} is of {want['dataset']!r}; set attack.store "
            f"to a store of {want['dataset']!r} or leave it unset"
        )
    for key in ("fingerprint", "split_seed", "splits", "model", "recipe", "seed", "format"):
        if have.get(key) != want.get(key):
            shown = (
                {k: v for k, v in want["recipe"].items() if have["recipe"].get(k) != v}
                if key == "recipe" and isinstance(have.get("recipe"), dict)
                else want.get(key)
            )
            raise PrivtoolError(
                f"store {store_dir} was built with another {key} than target "
                f"{target.dir} needs ({key}: {shown}); leave attack.store unset "
                f"or build a matching store with `privtool store --target "
                f"{target.dir} --out DIR`"
            )


def store_points(splits: dict[str, np.ndarray]) -> np.ndarray:
    """Dataset indices whose signals a store keeps: shadow ∪ train ∪ test, sorted."""
    return np.unique(
        np.concatenate([np.asarray(splits[k]) for k in ("shadow", "train", "test")])
    ).astype(np.int64)


def model_mask(points: np.ndarray, pool: np.ndarray, kind: str, seed: int, m: int) -> np.ndarray:
    """Model ``m``'s training mask over ``points``: a random half of ``pool`` for even ``m``,
    the complementary half for odd ``m`` (pairs share one draw)."""
    rng = np.random.default_rng([int(seed), KINDS.index(kind), m // 2])
    perm = rng.permutation(np.asarray(pool))
    half = perm[: len(perm) // 2] if m % 2 == 0 else perm[len(perm) // 2 :]
    return np.isin(points, half)


def model_seed(seed: int, kind: str, m: int) -> int:
    """Model ``m``'s training seed, drawn from the store seed and its set."""
    return int(
        np.random.SeedSequence([int(seed), KINDS.index(kind), m]).generate_state(1)[0] % (2**31 - 1)
    )
