"""Query augmentation for membership attacks (``attack.augment: none | mirror | shift |
mirror-shift``).

Carlini et al. 2022 (LiRA, §VI-A "Augmented queries") query each point at its mirror image and
small shifts as well as as-is: a model trained on x with augmentation has fitted those views
too, so each is one more (correlated) sample of the membership signal. Zarifzadeh et al. 2024
(RMIA, §5 "augmented queries") do the same. The views here (the transform is
:func:`privtool.augment.shift_mirror`, the one ``train.augment`` uses):

* ``none``         — the point itself (1 query);
* ``mirror``       — itself and its left-right mirror image (2 queries);
* ``shift``        — itself shifted by −1, 0 or +1 pixel on each axis with reflect padding
  (9 queries);
* ``mirror-shift`` — both (2 × 9 = 18 queries, Carlini et al.'s 18: their models train with
  shifts of up to 4 of 32 pixels and are queried at ±1).

Augmented queries help when the target and its reference models trained on those views
(``train.augment``; the store's recipe includes it, so they do). Measured on sklearn digits
(8×8, MLP 300 epochs with ``train.augment: shift``, train accuracy 0.98–0.99, test 0.93–0.94,
4 + 4 reference models, train/attack seeds 0–3): ``attack.augment: shift`` raises LiRA's AUC
offline from 0.535–0.573 to 0.585–0.612 and online from 0.518–0.554 to 0.567–0.607 (each seed
gains), RMIA's offline from 0.544–0.583 to 0.611–0.654. On a model trained on the plain images
the views are no training views (and digits are not mirror-symmetric): on digits (overfit MLP
without augmentation, seeds 0 and 1) averaging them with the plain query lowers offline LiRA
(0.571 → 0.501 and 0.570 → 0.484 with mirror-shift) and RMIA (0.596 → 0.491), so lira and rmia
warn when the queries hold views the target's ``train.augment`` lacks (:func:`query_warnings`).

The reference models' logits on every store point under every query are computed once per model
from its saved weights and kept beside it (``<set>/mNNNN.<augment>.npz``), so each augmentation
costs one pass per reference model, once, whichever attack or target asks. A store named by
``attack.store`` is never modified: build its augmented logits with ``privtool store --set
attack.augment=…``.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np

from privtool.artifacts import atomic_write_bytes
from privtool.augment import AUGMENTS, mirrors, query_mismatch, shift_mirror, shifts
from privtool.errors import PrivtoolError

Query = tuple[bool, int, int]  # (mirror, shift down, shift right)


def queries(augment: str) -> list[Query]:
    """The views of ``augment``; the plain point first."""
    if augment not in AUGMENTS:
        raise PrivtoolError(f"attack.augment={augment!r} is not allowed: {' | '.join(AUGMENTS)}")
    flips = (False, True) if mirrors(augment) else (False,)
    moves = [(0, 0)]
    if shifts(augment):
        moves += [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    return [(f, dy, dx) for f in flips for dy, dx in moves]


def augment_images(x: np.ndarray, query: Query) -> np.ndarray:
    """``x`` (n, C, H, W) seen through ``query``: mirrored left-right, then moved by (dy, dx)
    pixels (the content moves down/right for positive shifts; edges reflect) — the training
    transform :func:`privtool.augment.shift_mirror` with one view for every image."""
    import torch

    n = len(x)
    flip, dy, dx = query
    out = shift_mirror(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.full((n,), bool(flip)),
        torch.full((n,), int(dy)),
        torch.full((n,), int(dx)),
    )
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


def query_warnings(target: Any, augment: str) -> list[str]:
    """The warning that ``augment``'s queries are views ``target`` never trained on (its
    ``train.augment``; :func:`privtool.augment.query_mismatch`), or none."""
    trained = getattr(target.params.train, "augment", "none")
    w = query_mismatch(trained, augment)
    return [w] if w else []


def query_logits(
    model: Any, x: np.ndarray, index: np.ndarray, augment: str, device: Any, batch_size: int = 1024
) -> np.ndarray:
    """Logits of ``model`` on the points ``x[index]`` under every query of ``augment``:
    (Q, n, C) float32."""
    import torch

    model.eval()
    qs = queries(augment)
    out: list[list[np.ndarray]] = [[] for _ in qs]
    with torch.no_grad():
        for i in range(0, len(index), batch_size):
            xb = x[index[i : i + batch_size]]
            for k, q in enumerate(qs):
                t = torch.from_numpy(augment_images(xb, q)).to(device)
                out[k].append(model(t).float().cpu().numpy())
    return np.stack([np.concatenate(o) for o in out])


def _points_sha(points: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(points).astype("<i8").tobytes()).hexdigest()


def _load(path: Any, points_sha: str, n_points: int, n_queries: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if str(z["points_sha256"]) != points_sha or z["logits"].shape[:2] != (
                n_queries,
                n_points,
            ):
                return None
            return z["logits"]
    except Exception:  # noqa: BLE001  (truncated or foreign file: recompute it)
        return None


def store_query_logits(
    store: Any, target: Any, augment: str, *, build: bool, progress: Any = None
) -> dict[str, np.ndarray]:
    """Logits (N, Q, P, C) of each set's ``store.n_models`` models on all store points under
    ``augment``'s queries, computed once per model from its weights and cached beside it.

    ``augment: none`` is the store's own logits. With ``build`` False (a store named by
    ``attack.store``) missing files are an error naming the command that makes them.
    """
    out: dict[str, np.ndarray] = {}
    if augment == "none":
        for kind in store.kinds:
            out[kind] = store.signals_for(store.points, kind=kind)["logits"][:, None]
        return out
    qs = queries(augment)
    sha = _points_sha(store.points)
    todo = []
    for kind in store.kinds:
        for m in range(store.n_models):
            path = store.dir / kind / f"m{m:04d}.{augment}.npz"
            if _load(path, sha, len(store.points), len(qs)) is None:
                todo.append((kind, m, path))
    if todo and not build:
        raise PrivtoolError(
            f"store {store.dir} has no attack.augment={augment} logits for "
            f"{len(todo)} of its models; add them with `privtool store --target "
            f"{target.dir} --out {store.dir} --set attack.augment={augment}"
            f"{' --online' if 'online' in store.kinds else ''}` or set "
            f"attack.augment=none"
        )
    if todo:
        _compute(todo, store, target, augment, sha, progress)
    for kind in store.kinds:
        out[kind] = np.stack(
            [
                _load(store.dir / kind / f"m{m:04d}.{augment}.npz", sha, len(store.points), len(qs))
                for m in range(store.n_models)
            ]
        )
    return out


def _compute(
    todo: list[tuple[str, int, Any]], store: Any, target: Any, augment: str, sha: str, progress: Any
) -> None:
    import torch

    from privtool.models import build_model

    model_name = store.identity["model"]
    if progress is not None:
        progress.start(len(todo), f"store {augment} queries ({len(todo)} models)")
    try:
        for kind, m, path in todo:
            state = torch.load(
                store.dir / kind / f"m{m:04d}.pt", map_location="cpu", weights_only=True
            )
            model = build_model(model_name, target.data.shape, target.data.n_classes)
            model.load_state_dict(state)
            logits = query_logits(
                model.to(target.device), target.data.x, store.points, augment, target.device
            )
            buf = io.BytesIO()
            np.savez(buf, logits=logits.astype(np.float32), points_sha256=sha, augment=augment)
            atomic_write_bytes(path, buf.getvalue())
            if progress is not None:
                progress.advance(model=f"{kind} {m}")
    finally:
        if progress is not None:
            progress.stop()
