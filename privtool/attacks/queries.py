"""Query augmentation for membership attacks (``attack.augment: none | mirror | mirror-shift``).

Carlini et al. 2022 (LiRA, §VI-A "Augmented queries") query each point at its mirror image and
small shifts as well as as-is: a model trained on x with augmentation has fitted those views
too, so each is one more (correlated) sample of the membership signal. Zarifzadeh et al. 2024
(RMIA, §5 "augmented queries") do the same. The views here:

* ``none``         — the point itself (1 query);
* ``mirror``       — itself and its left-right mirror image (2 queries);
* ``mirror-shift`` — both, each shifted by −1, 0 or +1 pixel on each axis with reflect padding
  (Carlini et al.'s padding; 2 × 9 = 18 queries). Carlini et al. shift CIFAR-10 by up to 4 of
  32 pixels; one pixel of 28 keeps a digit's strokes where the model saw them.

Augmented queries help when the target trained on those views (Carlini et al. train with
mirror + shift augmentation). privtool's models train on the plain images, and digits are not
mirror-symmetric, so here a mirrored or shifted digit is no training view: measured on sklearn
digits (8×8, overfit MLP, 4 reference models, seeds 0 and 1), each augmented view alone scores
AUC 0.45–0.53, and averaging them with the plain query lowers offline LiRA (0.571 → 0.501 and
0.570 → 0.484 with mirror-shift) and RMIA (0.596 → 0.491); online LiRA, whose per-query log
likelihood ratio is near 0 where IN and OUT fits agree, moves either way (0.545 → 0.567, 0.581 →
0.552). Keep ``none`` for models trained without augmentation; the queries are for targets
trained with it (and the signals are cached, so trying costs one pass per reference model).

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
