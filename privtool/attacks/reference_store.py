"""The reference/shadow model store: train N models once, keep their signals, reuse them.

A store holds models of one recipe on one dataset and split, and each model's logits on every
point a membership attack may ask about (the target's ``shadow``, ``train`` and ``test``
splits), with the model's in/out membership mask over those points (ML Privacy Meter's
habit: attacks are pure functions of these saved signals, so adding an attack never retrains).

Two sets of models, each drawn in complementary pairs (model 2k trains on a random half of
its pool, model 2k+1 on the other half, so every pool point is "in" for exactly half of an
even number of models):

* ``offline`` — pool = the ``shadow`` split only (paper 1 §5.1–5.2: shadow / reference models
  never see the target's data). MIA-R, offline LiRA and Shokri use these.
* ``online`` — pool = train ∪ test, the points an evaluation set is drawn from (Carlini et
  al. 2022's online LiRA: models with and without each evaluation point).

The recipe is the target's own (``shadow`` role: DP included, the models mimic the target) or
its non-DP version (``reference`` role: paper 1 §5.2 "reference models are never trained with
DP"); for a non-private target both are the same store.

Layout (one store per dataset × split × recipe × seed)::

    STORE/store.json              identity (dataset, fingerprint, split hashes, recipe, seed)
                                  and one record per finished model
    STORE/points.npz              the dataset indices the signals cover (sorted) and labels
    STORE/<set>/mNNNN.pt          the model (state_dict)
    STORE/<set>/mNNNN.npz         logits (P, C) on the points, loss (P,), in-mask (P,)
    STORE/<set>/signals.npz       all models stacked: logits (N, P, C), loss, in (N, P)

Each model's files are written atomically, the ``.npz`` last, so a killed run resumes from the
models already saved; asking for more models than a store holds trains only the new ones.
Training fans out over CPU cores with one process per core (``torch.set_num_threads(1)``
each). On CUDA, or with ``attack.workers: 1``, it runs in this process and trains the
non-private models of a set together, stacked (:mod:`privtool.attacks.stacked`: one
``vmap``-ed forward pass for up to ``MAX_STACK`` models), the others one by one. With
``attack.backend: ray`` the models train as Ray tasks (a local Ray or a cluster at
``attack.ray_address``) and this process saves each as it arrives.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from privtool.artifacts import atomic_write_bytes, write_json
from privtool.augment import shifts
from privtool.errors import PrivtoolError

FORMAT = 1
KINDS = ("offline", "online")
DEFAULT_ROOT = Path("runs") / "store"
MAX_STACK = 32  # models trained together in one stacked (vmap) run
SHIP_BYTES = 256 << 20  # datasets up to this size are sent to worker processes, not reloaded
# What a non-DP model's training depends on (the rest of TrainConfig is DP noise/accounting,
# bookkeeping, or the per-model seed).
NON_DP_KEYS = ("model", "epochs", "batch_size", "optimizer", "lr", "momentum")
NOT_RECIPE = ("seed", "device", "eval_batch_size", "checkpoint_every", "noise_seed")
# Recipe keys added after stores were recorded: in the record only away from their default,
# so an older store (and its directory hash) stays the identity of the recipe it was built for.
LATER_KEYS = {"augment": "none", "augment_shift": None}


# --------------------------------------------------------------------------- recipe and identity


def recipe_config(train: Any, role: str) -> Any:
    """The TrainConfig store models train with: the target's own (``shadow``) or its non-DP
    version (``reference``)."""
    if role == "reference" and train.mech != "none":
        return replace(train, mech="none", epsilon=None)
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
    if d.get("mech") == "none":
        return {"mech": "none", **{k: d[k] for k in NON_DP_KEYS}, **later}
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
    return int(
        np.random.SeedSequence([int(seed), KINDS.index(kind), m]).generate_state(1)[0] % (2**31 - 1)
    )


# --------------------------------------------------------------------------- model training


def predict_logits(
    model: Any, x: np.ndarray, index: np.ndarray, device: Any, batch_size: int = 1024
) -> np.ndarray:
    """Logits of ``model`` on ``x[index]`` in batches (float32, (n, C))."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(index), batch_size):
            xb = torch.from_numpy(x[index[i : i + batch_size]]).to(device)
            out.append(model(xb).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


_WORKER: dict[str, Any] = {}


def _worker_init(data: Any, data_cfg: dict[str, Any], fingerprint: str, threads: int) -> None:
    """Process-pool initialiser: one thread per process and the dataset, passed in (small
    sets: no re-parsing) or loaded once from ``data_cfg`` (large ones: no huge pickles)."""
    import torch

    torch.set_num_threads(threads)
    if data is None:
        from privtool.data import data_root, load_dataset

        data = load_dataset(
            data_cfg["dataset"],
            data_root(data_cfg.get("root")),
            image_size=data_cfg.get("image_size"),
        )
        if data.fingerprint() != fingerprint:
            raise PrivtoolError(f"dataset {data.name!r} changed while the store was training")
    _WORKER["data"] = data


def _job_cfg(job: dict[str, Any], device: Any) -> Any:
    """The TrainConfig of one store model (its seed; a batch no larger than its data)."""
    from privtool.config import TrainConfig

    cfg = TrainConfig(**job["recipe"])
    n_train = int(job["mask"].sum())
    # store models are the attacker's simulations, never released: reproducible noise (resume)
    return replace(
        cfg,
        seed=job["seed"],
        device=str(device),
        noise_seed="from-seed",
        batch_size=min(cfg.batch_size, n_train),
    )


def _train_job(job: dict[str, Any], data: Any = None, device: Any = "cpu") -> dict[str, Any]:
    """Train one store model with :func:`~privtool.training.train_model` (any mechanism),
    save it and its signals; return its record."""
    data = data if data is not None else _WORKER["data"]
    t0 = time.perf_counter()
    cfg, state, model, fit = _fit_job(job, data, device)
    return _save_model(job, cfg, state, model, data, device, t0, **fit)


def _fit_job(job: dict[str, Any], data: Any, device: Any) -> tuple[Any, dict, Any, dict]:
    """Train one store model; return its config, CPU state_dict, model and fit summary."""
    import torch

    from privtool.models import build_model
    from privtool.training import seed_everything, train_model

    cfg = _job_cfg(job, device)
    points, mask = job["points"], job["mask"]
    tr, te = points[mask], points[job["eval"]]
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data.shape, data.n_classes)

    def tensors(idx: np.ndarray) -> tuple[Any, Any]:
        return (torch.from_numpy(data.x[idx]).to(device), torch.from_numpy(data.y[idx]).to(device))

    outcome = train_model(cfg, model, *tensors(tr), *tensors(te), device=torch.device(device))
    state = {k: v.detach().cpu() for k, v in outcome.model.state_dict().items()}
    return (
        cfg,
        state,
        outcome.model,
        {"steps": outcome.metrics["steps"], "epsilon": outcome.metrics.get("epsilon")},
    )


def _ray_fit(
    job: dict[str, Any], data: Any, data_cfg: dict[str, Any], fingerprint: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Ray task: train one store model on one thread of a Ray worker (any node) and return
    its state_dict and fit summary; the driver computes and saves its signals, so worker
    nodes need privtool and the dataset, not the store's filesystem."""
    _worker_init(data, data_cfg, fingerprint, 1)
    t0 = time.perf_counter()
    _, state, _, fit = _fit_job(job, _WORKER["data"], "cpu")
    return state, {**fit, "seconds": time.perf_counter() - t0}


def _train_stacked_jobs(jobs: list[dict[str, Any]], data: Any, device: Any, tick: Any) -> None:
    """Train non-private ``jobs`` of one set together (:mod:`privtool.attacks.stacked`)."""
    from privtool.attacks.stacked import train_stacked

    t0 = time.perf_counter()
    cfgs = [_job_cfg(j, device) for j in jobs]
    sets = [j["points"][j["mask"]] for j in jobs]
    states = train_stacked(
        cfgs[0], [c.seed for c in cfgs], sets, data.x, data.y, data.shape, data.n_classes, device
    )
    per_model = (time.perf_counter() - t0) / len(jobs)
    for job, cfg, state, tr in zip(jobs, cfgs, states, sets):
        steps = cfg.epochs * -(-len(tr) // cfg.batch_size)
        tick(
            _save_state(
                job, cfg, state, data, device, per_model, steps=steps, epsilon=None, stacked=True
            )
        )


def _save_state(
    job: dict[str, Any],
    cfg: Any,
    state: dict[str, Any],
    data: Any,
    device: Any,
    seconds: float,
    **fit: Any,
) -> dict[str, Any]:
    """:func:`_save_model` for weights trained elsewhere (stacked, or on a Ray worker): rebuild
    the model from ``state`` here and record the ``seconds`` its training took."""
    from privtool.models import build_model

    model = build_model(cfg.model, data.shape, data.n_classes)
    model.load_state_dict(state)
    return _save_model(
        job, cfg, state, model.to(device), data, device, time.perf_counter() - seconds, **fit
    )


def _save_model(
    job: dict[str, Any],
    cfg: Any,
    state: dict[str, Any],
    model: Any,
    data: Any,
    device: Any,
    t0: float,
    *,
    steps: int,
    epsilon: float | None,
    stacked: bool = False,
) -> dict[str, Any]:
    """Write one model's state_dict and its signals (the ``.npz`` last: it marks the model
    complete); return its record."""
    import torch

    from privtool.attacks.signals import cross_entropy

    points, mask = job["points"], job["mask"]
    logits = predict_logits(model, data.x, points, device)
    labels = data.y[points]
    loss = cross_entropy(logits, labels).astype(np.float32)
    right = logits.argmax(1) == labels
    record = {
        "id": job["id"],
        "kind": job["kind"],
        "seed": cfg.seed,
        "n_train": int(mask.sum()),
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "steps": int(steps),
        "train_accuracy": float(right[mask].mean()),
        "test_accuracy": float(right[job["eval"]].mean()) if job["eval"].any() else None,
        "epsilon": epsilon,
        "stacked": stacked,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(job["pt"], buf.getvalue())
    buf = io.BytesIO()
    np.savez(
        buf,
        logits=logits.astype(np.float32),
        loss=loss,
        mask=mask,
        points_sha256=job["points_sha256"],
        record=json.dumps(record),
    )
    atomic_write_bytes(job["npz"], buf.getvalue())
    return record


# --------------------------------------------------------------------------- the store


@dataclass
class Store:
    """A store on disk with ``n_models`` usable models per requested set."""

    dir: Path
    identity: dict[str, Any]
    points: np.ndarray
    labels: np.ndarray
    shadow: np.ndarray
    n_models: int
    kinds: tuple[str, ...]
    trained: int = 0
    seconds: float = 0.0
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _cache: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def _signals(self, kind: str) -> dict[str, np.ndarray]:
        if kind not in self.kinds:
            raise PrivtoolError(f"store {self.dir} was not asked for its {kind} models")
        if kind not in self._cache:
            logits, loss, mask = [], [], []
            for m in range(self.n_models):
                with np.load(self.dir / kind / f"m{m:04d}.npz") as z:
                    logits.append(z["logits"])
                    loss.append(z["loss"])
                    mask.append(z["mask"])
            self._cache[kind] = {
                "logits": np.stack(logits),
                "loss": np.stack(loss),
                "in": np.stack(mask),
            }
        return self._cache[kind]

    def positions(self, index: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.points, index)
        pos = np.minimum(pos, len(self.points) - 1)
        if not np.array_equal(self.points[pos], index):
            raise PrivtoolError(
                f"store {self.dir} has no signals for some evaluation points; "
                f"it was built for other splits"
            )
        return pos

    def signals_for(self, index: np.ndarray, *, kind: str) -> dict[str, np.ndarray]:
        """Logits (N, n, C), loss (N, n) and in-mask (N, n) of the ``kind`` models on the
        dataset points ``index``."""
        s, pos = self._signals(kind), self.positions(np.asarray(index))
        return {"logits": s["logits"][:, pos], "loss": s["loss"][:, pos], "in": s["in"][:, pos]}

    def shadow_signals(self) -> dict[str, np.ndarray]:
        """The offline models on the shadow pool (Shokri's attack-model training data)."""
        out = self.signals_for(self.shadow, kind="offline")
        out["labels"] = self.labels[self.positions(self.shadow)]
        return out

    def describe(self) -> dict[str, Any]:
        """Store fields for an attack's metrics."""
        out: dict[str, Any] = {
            "store": str(self.dir),
            "n_models": self.n_models,
            "store_models_trained": self.trained,
        }
        for kind in self.kinds:
            rec = self.records.get(kind, [])[: self.n_models]
            for key in ("train_accuracy", "test_accuracy", "n_train"):
                vals = [r[key] for r in rec if r.get(key) is not None]
                if vals:
                    out[f"{kind}_models_{key}"] = (
                        int(np.mean(vals)) if key == "n_train" else float(np.mean(vals))
                    )
        return out


def _read_meta(store_dir: Path) -> dict[str, Any] | None:
    p = store_dir / "store.json"
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PrivtoolError(
            f"{p} is corrupt (not valid JSON); delete {store_dir} and rerun "
            f"the attack to rebuild the store"
        ) from None
    if not isinstance(meta, dict) or "identity" not in meta:
        raise PrivtoolError(f"{p} is not a privtool model store; point attack.store elsewhere")
    return meta


def _check_identity(
    store_dir: Path, have: dict[str, Any], want: dict[str, Any], target: Any
) -> None:
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


def resolve_store_dir(target: Any, cfg: Any, role: str) -> tuple[Path, dict[str, Any], bool]:
    """(store dir, identity it must have, whether it was named explicitly by attack.store)."""
    identity = store_identity(target, role, cfg.seed)
    if cfg.store:
        return Path(cfg.store), identity, True
    return default_store_dir(identity), identity, False


def _check_shadow(target: Any) -> None:
    shadow = target.splits.get("shadow")
    if shadow is None or len(shadow) < 2:
        raise PrivtoolError(
            f"target run {target.dir} has no 'shadow' split (or fewer than 2 "
            f"points) to train reference/shadow models on; train it with "
            f"data.splits.shadow > 0"
        )


def check_store_inputs(target: Any, cfg: Any, role: str = "reference") -> None:
    """Fail early (before any output is written) on a target without a shadow pool or an
    explicit store that cannot serve it."""
    _check_shadow(target)
    store_dir, identity, explicit = resolve_store_dir(target, cfg, role)
    if explicit:
        meta = _read_meta(store_dir)
        if meta is None:
            raise PrivtoolError(
                f"attack.store {store_dir} is not a model store (no store.json); "
                f"make it with `privtool store --target {target.dir} --out "
                f"{store_dir}` or leave attack.store unset"
            )
        _check_identity(store_dir, meta["identity"], identity, target)


def ensure_store(
    target: Any,
    cfg: Any,
    *,
    role: str = "reference",
    online: bool = False,
    build: bool | None = None,
    progress: Any = None,
) -> Store:
    """The store ``target`` needs with ``cfg.n_models`` models per set (``offline``, plus
    ``online`` when asked), training only the models that are missing.

    A store named by ``attack.store`` is used as it is (``build`` False): it must match the
    target's dataset, splits and recipe and hold enough models — it is never modified, so a
    DVC stage may depend on it. An unnamed store lives under ``runs/store/`` and is built or
    extended on demand; ``privtool store`` builds a named one (``build`` True).
    """
    _check_shadow(target)
    store_dir, identity, explicit = resolve_store_dir(target, cfg, role)
    build = (not explicit) if build is None else build
    kinds = ("offline", "online") if online else ("offline",)
    n = cfg.n_models
    if online and n < 2:
        raise PrivtoolError(
            f"attack.n_models={n} is too few for online LiRA: it needs models "
            f"with and without each point; use at least 2"
        )
    meta = _read_meta(store_dir)
    if meta is None:
        if not build:
            raise PrivtoolError(
                f"attack.store {store_dir} is not a model store (no store.json); "
                f"make it with `privtool store --target {target.dir} --out "
                f"{store_dir}` or leave attack.store unset"
            )
        meta = {"identity": identity, "models": {}}
    else:
        _check_identity(store_dir, meta["identity"], identity, target)
    points = store_points(target.splits)
    shadow = np.asarray(target.splits["shadow"], dtype=np.int64)
    labels = target.data.y[points]
    points_sha = hashlib.sha256(points.astype("<i8").tobytes()).hexdigest()
    pools = {"offline": shadow, "online": np.union1d(target.splits["train"], target.splits["test"])}

    jobs: list[dict[str, Any]] = []
    for kind in kinds:
        for m in range(n):
            mask = model_mask(points, pools[kind], kind, cfg.seed, m)
            npz = store_dir / kind / f"m{m:04d}.npz"
            if _complete(npz, mask, points_sha):
                continue
            if not build:
                have = sum(
                    _complete(
                        store_dir / kind / f"m{i:04d}.npz",
                        model_mask(points, pools[kind], kind, cfg.seed, i),
                        points_sha,
                    )
                    for i in range(n)
                )
                raise PrivtoolError(
                    f"store {store_dir} holds {have} complete {kind} models, "
                    f"attack.n_models={n} asks for {n}; extend it with "
                    f"`privtool store --target {target.dir} --out {store_dir} "
                    f"--set attack.n_models={n}{' --online' if online else ''}` "
                    f"or lower attack.n_models"
                )
            held_out = np.isin(points, pools[kind]) & ~mask
            jobs.append(
                {
                    "id": m,
                    "kind": kind,
                    "mask": mask,
                    "eval": held_out,
                    "points": points,
                    "points_sha256": points_sha,
                    "seed": model_seed(cfg.seed, kind, m),
                    "recipe": asdict(target_recipe(target, role)),
                    "pt": store_dir / kind / f"m{m:04d}.pt",
                    "npz": npz,
                }
            )

    t0 = time.perf_counter()
    if jobs:
        store_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, points=points, labels=labels, shadow=shadow)
        atomic_write_bytes(store_dir / "points.npz", buf.getvalue())
        write_json(store_dir / "store.json", _meta_with(meta, store_dir, kinds))
        _run_jobs(jobs, target, cfg, role, progress)
    seconds = time.perf_counter() - t0

    meta = _meta_with(meta, store_dir, KINDS)
    if jobs:
        write_json(store_dir / "store.json", meta)
    store = Store(
        dir=store_dir,
        identity=identity,
        points=points,
        labels=labels,
        shadow=shadow,
        n_models=n,
        kinds=kinds,
        trained=len(jobs),
        seconds=seconds,
        records={k: sorted(meta["models"].get(k, []), key=lambda r: r["id"]) for k in kinds},
    )
    if jobs:
        for kind in kinds:
            _export(store, kind)
    return store


def _complete(npz: Path, mask: np.ndarray, points_sha: str) -> bool:
    """Whether ``npz`` is a finished model file for this mask and these points."""
    if not npz.is_file() or not npz.with_suffix(".pt").is_file():
        return False
    try:
        with np.load(npz) as z:
            return (
                str(z["points_sha256"]) == points_sha
                and z["logits"].shape[0] == len(mask)
                and np.array_equal(z["mask"], mask)
            )
    except Exception:  # truncated or foreign file: retrain it
        return False


def _meta_with(meta: dict[str, Any], store_dir: Path, kinds: tuple[str, ...]) -> dict[str, Any]:
    """store.json with a record for every complete model file on disk."""
    from privtool import __version__

    models: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        recs = []
        for f in sorted((store_dir / kind).glob("m[0-9][0-9][0-9][0-9].npz")):
            try:
                with np.load(f) as z:
                    recs.append(json.loads(str(z["record"])))
            except Exception:
                continue
        if recs:
            models[kind] = recs
    return {
        "identity": meta["identity"],
        "privtool": __version__,
        "n_models": {k: len(v) for k, v in models.items()},
        "models": models,
    }


def _export(store: Store, kind: str) -> None:
    """``<set>/signals.npz``: every model of the set stacked (ML Privacy Meter's layout)."""
    n = 0
    while (store.dir / kind / f"m{n:04d}.npz").is_file():
        n += 1
    s = (store if n == store.n_models else replace(store, n_models=n, _cache={}))._signals(kind)
    buf = io.BytesIO()
    np.savez_compressed(buf, points=store.points, labels=store.labels, **s)
    atomic_write_bytes(store.dir / kind / "signals.npz", buf.getvalue())


def _stack_groups(jobs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Jobs that can train together: non-private recipes of one set whose training sets all
    hold at least a full batch; every other job alone."""
    groups: dict[str, list[dict[str, Any]]] = {}
    alone: list[list[dict[str, Any]]] = []
    for job in jobs:
        r = job["recipe"]
        if r["mech"] == "none" and int(job["mask"].sum()) >= r["batch_size"]:
            groups.setdefault(job["kind"], []).append(job)
        else:
            alone.append([job])
    chunks = [g[i : i + MAX_STACK] for g in groups.values() for i in range(0, len(g), MAX_STACK)]
    return [*chunks, *alone]


def _cpu_count() -> int:
    """CPU cores this process may use (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _run_jobs(jobs: list[dict[str, Any]], target: Any, cfg: Any, role: str, progress: Any) -> None:
    """Train ``jobs``: in-process on CUDA or with one worker, else one process per core."""
    device = target.device
    workers = cfg.workers or _cpu_count()
    workers = max(1, min(workers, len(jobs)))
    what = f"store {role} {jobs[0]['recipe']['model']} ({len(jobs)} models)"
    if progress is not None:
        progress.start(len(jobs), what)

    def tick(rec: dict[str, Any]) -> None:
        if progress is not None:
            progress.advance(model=f"{rec['kind']} {rec['id']}", acc=rec["test_accuracy"])

    try:
        if cfg.backend == "ray":
            _run_jobs_ray(jobs, target, cfg, tick)
            return
        if getattr(device, "type", str(device)) == "cuda" or workers == 1:
            import torch

            threads = torch.get_num_threads()
            if getattr(device, "type", str(device)) == "cpu":
                torch.set_num_threads(1)  # small models: one thread beats two that contend
            try:
                for group in _stack_groups(jobs):
                    if len(group) > 1:
                        _train_stacked_jobs(group, target.data, device, tick)
                    else:
                        tick(_train_job(group[0], target.data, device))
            finally:
                torch.set_num_threads(threads)
            return
        import multiprocessing as mp
        from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

        data_cfg, shipped = _data_for_workers(target)
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),
            initializer=_worker_init,
            initargs=(shipped, data_cfg, target.data.fingerprint(), 1),
        ) as pool:
            futures = [pool.submit(_train_job, job) for job in jobs]
            try:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for f in done:
                        tick(f.result())
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    finally:
        if progress is not None:
            progress.stop()


def _data_for_workers(target: Any) -> tuple[dict[str, Any], Any]:
    """The data section workers reload the dataset from, and the dataset itself when it is
    small enough to send (else None: each worker loads it once and checks its fingerprint)."""
    data_cfg = asdict(target.params.data)
    data_cfg["splits"] = dict(data_cfg["splits"])
    return data_cfg, (target.data if target.data.x.nbytes <= SHIP_BYTES else None)


def _run_jobs_ray(jobs: list[dict[str, Any]], target: Any, cfg: Any, tick: Any) -> None:
    """Train ``jobs`` as Ray tasks (``attack.backend: ray``; SPEC §11): one CPU each, on the
    cluster at ``attack.ray_address`` or on a local Ray started here with ``attack.workers``
    CPUs (0: every core); tasks train on CPU. Results arrive in any order; each model is saved as it arrives, so
    a killed run resumes like the local one, and the models equal the local processes' (same
    seeds, one thread each)."""
    try:
        import ray
    except ImportError:
        raise PrivtoolError(
            "attack.backend=ray needs Ray: pip install 'privtool[ray]' "
            "(or set attack.backend=local)"
        ) from None
    import logging

    started = not ray.is_initialized()
    if started:
        local = {} if cfg.ray_address else {"num_cpus": cfg.workers or _cpu_count()}
        try:
            ray.init(
                address=cfg.ray_address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                **local,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PrivtoolError(
                f"attack.ray_address={cfg.ray_address!r}: cannot start or reach Ray ({first})"
            ) from None
    try:
        data_cfg, shipped = _data_for_workers(target)
        data_ref = ray.put(shipped)
        fit = ray.remote(num_cpus=1, max_retries=2)(_ray_fit)
        by_ref = {
            fit.remote(job, data_ref, data_cfg, target.data.fingerprint()): job for job in jobs
        }
        pending = list(by_ref)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                job = by_ref[done[0]]
                state, summary = ray.get(done[0])
                tick(
                    _save_state(
                        job,
                        _job_cfg(job, "cpu"),
                        state,
                        target.data,
                        "cpu",
                        summary["seconds"],
                        steps=summary["steps"],
                        epsilon=summary["epsilon"],
                    )
                )
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()
