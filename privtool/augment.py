"""Image augmentation by mirroring and pixel shifts: one transform for training
(``train.augment``) and for membership queries (``attack.augment``, :mod:`privtool.attacks.queries`).

Carlini et al. 2022 (LiRA, §VI-A) train their targets and reference models with a random
left-right mirror and a random shift of up to ±4 of 32 pixels with reflect padding, and query
each point at its mirror image and its ±1-pixel shifts. The names here:

* ``none``         — the image as it is;
* ``mirror``       — mirrored left-right with probability 1/2;
* ``shift``        — moved by (dy, dx), each uniform on {−s, …, s}, edges reflected;
* ``mirror-shift`` — both (Carlini et al.'s training augmentation).

``s`` is ``train.augment_shift``, or by default ⌈min(H, W)/8⌉: 1 pixel for 8×8 digits, 4 for
28×28 MNIST and 32×32 CIFAR (Carlini et al.'s and the usual CIFAR setting).

**Privacy.** Augmentation is a per-record transform applied before the per-sample gradients
are computed and clipped: record x contributes the clipped gradient of ℓ(θ; T(x)) for a
transform T drawn for that record. Each record's transform at step t is a function of
(``train.seed``, t, the record's own content) only (:func:`record_keys`), so adding or removing
one record (or one unit, for class/subclass DP) changes no other record's transform. For every
fixed sequence of transforms the training is the same mechanism with a different per-record
loss, with the same sensitivity (the clipping bound) and the same sampling, so the mechanism's
(ε, δ) (its accountant's theorem: Abadi et al. 2016 / Mironov et al. 2019 for DP-SGD, paper 1
for VMF) holds unchanged, whether or not the seed is known; the transforms need not be secret.
They are reproducible from ``train.seed`` whatever ``train.noise_seed`` is.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from privtool.errors import PrivtoolError

AUGMENTS = ("none", "mirror", "shift", "mirror-shift")  # train.augment and attack.augment


def mirrors(augment: str) -> bool:
    return augment in ("mirror", "mirror-shift")


def shifts(augment: str) -> bool:
    return augment in ("shift", "mirror-shift")


def shift_size(augment_shift: int | None, shape: tuple[int, ...]) -> int:
    """The largest shift s in pixels: ``augment_shift``, or ⌈min(H, W)/8⌉ when null."""
    h, w = shape[-2:]
    s = math.ceil(min(h, w) / 8) if augment_shift is None else int(augment_shift)
    if s >= min(h, w):
        raise PrivtoolError(
            f"train.augment_shift={s} is not allowed: fewer pixels than the {h}×{w} images"
        )
    return s


def shift_mirror(x: Any, flip: Any, dy: Any, dx: Any) -> Any:
    """Each image ``x[i]`` (a torch tensor (n, C, H, W)) mirrored left-right where ``flip[i]``,
    then moved by (``dy[i]``, ``dx[i]``) pixels (content moves down/right for positive shifts;
    the edges reflect, as Carlini et al.'s padding). ``flip``, ``dy``, ``dx``: tensors (n,)."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    if n and bool(flip.any()):
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    p = int(max(dy.abs().max(), dx.abs().max())) if n else 0
    if p == 0:
        return x
    pad = F.pad(x, (p, p, p, p), mode="reflect").flatten(2)  # (n, C, (H+2p)(W+2p))
    dev = x.device
    rows = (p - dy.to(dev))[:, None] + torch.arange(h, device=dev)  # (n, H)
    cols = (p - dx.to(dev))[:, None] + torch.arange(w, device=dev)  # (n, W)
    flat = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).view(n, 1, h * w)
    return pad.gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)


def record_keys(x: Any, y: Any, chunk: int = 4096) -> np.ndarray:
    """A 64-bit key per record from its content (float32 image bytes and label; tensors or
    arrays): the source of its transforms, unchanged when other records are added or removed."""
    keys = np.empty(len(x), np.uint64)
    for a in range(0, len(x), chunk):
        xs, ys = (
            np.asarray(v.detach().cpu() if hasattr(v, "detach") else v)
            for v in (x[a : a + chunk], y[a : a + chunk])
        )
        for k, (xi, yi) in enumerate(zip(xs, ys)):
            d = hashlib.blake2b(np.ascontiguousarray(xi, np.float32).tobytes(), digest_size=8)
            d.update(np.int64(yi).tobytes())
            keys[a + k] = np.frombuffer(d.digest(), np.uint64)[0]
    return keys


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64 with good avalanche)."""
    z = z.copy()
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


class BatchAugment:
    """``train.augment`` of one training run: ``aug(xb, idx, step)`` is the batch ``xb`` (the
    records ``idx`` of the training set) with each record's transform for ``step``."""

    def __init__(self, augment: str, s: int, seed: int, keys: np.ndarray) -> None:
        self.augment, self.s, self.keys = augment, s, keys
        self.salt = np.uint64(np.random.SeedSequence([int(seed), 0xA06]).generate_state(1)[0])

    @classmethod
    def for_run(cls, cfg: Any, x_train: Any, y_train: Any) -> BatchAugment | None:
        """None for ``train.augment: none``; else the run's augmenter (images (n, C, H, W))."""
        if cfg.augment == "none":
            return None
        return cls.for_keys(cfg, tuple(x_train.shape[1:]), cfg.seed, record_keys(x_train, y_train))

    @classmethod
    def for_keys(
        cls, cfg: Any, shape: tuple[int, ...], seed: int, keys: np.ndarray
    ) -> BatchAugment:
        """The augmenter of a run with ``cfg``'s augment keys, ``seed`` and records ``keys``
        (images of ``shape`` (C, H, W))."""
        if len(shape) != 3:
            raise PrivtoolError(
                f"train.augment={cfg.augment} needs images (C, H, W); this dataset's "
                f"records have shape {tuple(shape)}"
            )
        s = shift_size(cfg.augment_shift, shape) if shifts(cfg.augment) else 0
        return cls(cfg.augment, s, seed, keys)

    def draw(self, idx: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flip, dy, dx) of records ``idx`` at ``step``: functions of (seed, step, key)."""
        with np.errstate(over="ignore"):
            h = _mix(self.keys[idx] ^ _mix(np.array([self.salt + np.uint64(step)]))[0])
        flip = (h & np.uint64(1)).astype(bool) if mirrors(self.augment) else np.zeros(len(h), bool)
        span = np.uint64(2 * self.s + 1)
        dy = ((h >> np.uint64(8)) % span).astype(np.int64) - self.s
        dx = ((h >> np.uint64(32)) % span).astype(np.int64) - self.s
        return flip, dy, dx

    def __call__(self, xb: Any, idx: np.ndarray, step: int) -> Any:
        import torch

        flip, dy, dx = (torch.from_numpy(a).to(xb.device) for a in self.draw(idx, step))
        return shift_mirror(xb, flip, dy, dx)


def query_mismatch(train_augment: str, attack_augment: str) -> str | None:
    """A warning when ``attack.augment``'s queries include views the target never trained on
    (mirror images or shifts its ``train.augment`` lacks), else None."""
    missing = [
        what
        for what, q, t in (
            ("mirrored", mirrors(attack_augment), mirrors(train_augment)),
            ("shifted", shifts(attack_augment), shifts(train_augment)),
        )
        if q and not t
    ]
    if not missing:
        return None
    return (
        f"attack.augment={attack_augment} queries {' and '.join(missing)} views, but the target "
        f"was trained with train.augment={train_augment}: the queries do not match training and "
        f"LiRA/RMIA may lose power (Carlini et al. 2022 §VI-A); use attack.augment=none or the "
        f"target's train.augment"
    )
