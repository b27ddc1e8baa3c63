"""Self-supervised pre-training on public data before DP training (paper 2 §4.2).

Paper 2 pre-trains its SVHN model "on rotated images of D_public predicting only rotations as
in Gidaris et al. (2018)" and then runs DP-SGD on the private data from those weights. Here
the model's ``features`` are trained with a temporary 4-way head on every public image at
0°, 90°, 180° and 270°; the head is then thrown away and DP training starts from the
pre-trained features with the model's own fresh head. No labels are used and no private
record is read, so it costs no ε: the mechanism and its accountant are untouched (only the
initial weights change), which is why it works with every mechanism.

The public source must be disjoint from the private ``train`` split: the private dataset's
``public`` split by default, or another registry dataset (checked image by image against the
private training images). Which images were used is written to meta.json as an index hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from privtool.config import Params, PretrainConfig
from privtool.errors import PrivtoolError
from privtool.registry import Registry

ROTATIONS = (0, 90, 180, 270)


@dataclass
class PretrainOutcome:
    """What a pre-training run leaves: the record for meta.json, metrics, warnings."""

    record: dict[str, Any]
    metrics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


# name -> fn(cfg, model, x_public (N, C, H, W) float32, *, seed, device, progress) -> metrics
PRETRAINERS: Registry[Callable[..., dict[str, Any]]] = Registry("pre-training method")


def rotate_images(x: Any) -> tuple[Any, Any]:
    """(B, C, H, W) -> (4B, C, H, W) images at 0/90/180/270° (``torch.rot90`` over H, W) and
    their rotation labels 0..3 (Gidaris et al. 2018, §3.1).

    Non-square images are first cropped to their centred min(H, W) square, rotated, and
    resized back to H×W (bilinear). All four rotations go through the same crop and resize, so
    neither the aspect ratio nor padding can give the rotation away.
    """
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        x = x[..., top : top + s, left : left + s]
    views = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    out = torch.cat(views)
    if h != w:
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    labels = torch.arange(4, device=x.device).repeat_interleave(len(x))
    return out, labels


def adapt_images(x: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, str | None]:
    """Public images (N, C, H, W) -> the private data's (C', H', W'): grey <-> RGB
    (replicate / ITU-R 601 luma), bilinear antialiased resize. Returns (images, what was done)."""
    import torch
    import torch.nn.functional as F

    c, h, w = shape
    done = []
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = np.repeat(x, c, axis=1)
            done.append(f"grey replicated to {c} channels")
        elif x.shape[1] == 3 and c == 1:
            x = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), x, axes=([0], [1]))
            x = x[:, None].astype(np.float32)
            done.append("RGB to grey (luma)")
        else:
            raise PrivtoolError(
                f"pre-training images have {x.shape[1]} channels and the private "
                f"data {c}; pick a pretrain.dataset with 1 or {c} channels"
            )
    if x.shape[2:] != (h, w):
        src = f"{x.shape[2]}x{x.shape[3]}"
        out = np.empty((len(x), c, h, w), np.float32)
        for i in range(0, len(x), 4096):
            t = torch.from_numpy(np.ascontiguousarray(x[i : i + 4096]))
            out[i : i + 4096] = (
                F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
                .clamp_(0, 1)
                .numpy()
            )
        x = out
        done.append(f"resized {src} to {h}x{w}")
    return np.ascontiguousarray(x, dtype=np.float32), ("; ".join(done) or None)


def _image_keys(x: np.ndarray) -> set[bytes]:
    """Exact-duplicate keys of images (8-bit quantised bytes), to test disjointness."""
    q = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8).reshape(len(x), -1)
    return {row.tobytes() for row in q}


def public_source(
    params: Params, data: Any, splits: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, Any]]:
    """The public images to pre-train on, in the private data's shape, and their record.

    The private dataset's own splits may be used except ``train`` (the private records);
    another dataset is checked image by image against the private training images.
    """
    from privtool.data import data_root, index_hash, load_dataset, make_splits

    cfg = params.pretrain
    name = cfg.dataset or params.data.dataset
    same = name == params.data.dataset
    split = cfg.split or ("public" if same else "all")
    if same:
        if split in ("train", "all"):
            raise PrivtoolError(
                f"pretrain.split={split} would pre-train on the private training records of "
                f"{name}; use a split disjoint from train (public, the default) or another "
                f"dataset via --set pretrain.dataset=NAME"
            )
        if split not in splits:
            raise PrivtoolError(
                f"pretrain.split={split!r} is not a split of {name}; valid: "
                f"{', '.join(k for k in splits if k != 'train')}"
            )
        src, idx = data, splits[split]
    else:
        src = load_dataset(name, data_root(params.data.root))
        if split == "all":
            idx = np.arange(len(src.y), dtype=np.int64)
        else:
            other = make_splits(
                src.y, seed=params.data.split_seed, fractions=dict(params.data.splits)
            )
            if split not in other:
                raise PrivtoolError(
                    f"pretrain.split={split!r} is not a split of {name}; valid: "
                    f"all, {', '.join(other)}"
                )
            idx = other[split]
    x, adapted = adapt_images(src.x[idx], data.shape)
    record: dict[str, Any] = {
        "method": cfg.method,
        "dataset": src.name,
        "source": src.source,
        "fingerprint": src.fingerprint(),
        "split": split,
        "n_examples": int(len(idx)),
        "index_sha256": index_hash(idx),
        "labels_used": False,
        "privacy_cost": 0,
        "disjoint_from": f"{params.data.dataset} train split",
        "adapted": adapted,
    }
    if not same:
        private = _image_keys(data.x[splits["train"]])
        overlap = sum(k in private for k in _image_keys(x))
        if overlap:
            raise PrivtoolError(
                f"{overlap} of the {len(idx)} pre-training images of {name} ({split}) are also "
                f"private training images of {params.data.dataset}; pre-train on data disjoint "
                f"from the private set (e.g. the default: pretrain.dataset=null, split public)"
            )
        record["overlap_with_private_train"] = 0
    return x, record


def pretrain(
    params: Params,
    model: Any,
    data: Any,
    splits: dict[str, np.ndarray],
    *,
    device: Any,
    progress: Any = None,
) -> PretrainOutcome:
    """Pre-train ``model``'s feature layers in place as ``params.pretrain`` says."""
    cfg = params.pretrain
    method = PRETRAINERS.get(str(cfg.method))
    if not hasattr(model, "features"):
        raise PrivtoolError(
            f"model {params.train.model!r} has no feature layers (.features) "
            f"to pre-train; every registry model has them"
        )
    x, record = public_source(params, data, splits)
    warnings = []
    n_params = sum(p.numel() for p in model.features.parameters())
    if n_params == 0:
        warnings.append(
            f"model {params.train.model!r} has no trainable feature layers: "
            f"{cfg.method} pre-training fits only its throw-away head and leaves the "
            f"model's initial weights unchanged"
        )
    scores = method(cfg, model, x, seed=params.train.seed, device=device, progress=progress)
    record.update(scores, feature_parameters=int(n_params), epochs=cfg.epochs)
    metrics = {
        "pretrain_method": cfg.method,
        "pretrain_source": f"{record['dataset']}:{record['split']}",
        "pretrain_n_examples": record["n_examples"],
        **{f"pretrain_{k}": v for k, v in scores.items()},
    }
    return PretrainOutcome(record=record, metrics=metrics, warnings=warnings)


@PRETRAINERS.register("rotation")
def rotation(
    cfg: PretrainConfig, model: Any, x: np.ndarray, *, seed: int, device: Any, progress: Any = None
) -> dict[str, Any]:
    """Train ``model.features`` + a 4-way linear head to predict each image's rotation
    (Gidaris et al. 2018); score rotation accuracy on ``cfg.holdout`` of the images.

    Runs under a forked torch RNG, so DP training after it draws the same random numbers
    as a run from scratch: only the initial feature weights differ.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    from privtool.training import NullProgress

    progress = progress or NullProgress()
    if len(x) < 2:
        raise PrivtoolError(f"rotation pre-training needs at least 2 public images, got {len(x)}")
    rng = np.random.default_rng(seed + 11)
    perm = rng.permutation(len(x))
    n_hold = min(len(x) - 1, max(1, int(round(cfg.holdout * len(x)))))
    hold, fit = np.sort(perm[:n_hold]), perm[n_hold:]
    x_fit = torch.from_numpy(x[fit]).to(device)
    x_hold = torch.from_numpy(x[hold]).to(device)
    batch = min(cfg.batch_size, len(fit))
    steps_per_epoch = -(-len(fit) // batch)

    devices = [device] if getattr(device, "type", str(device)) == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + 11)
        features = model.features.to(device).train()
        with torch.no_grad():
            width = int(features(x_fit[:1]).reshape(1, -1).shape[1])
        net = nn.Sequential(features, nn.Flatten(), nn.Linear(width, len(ROTATIONS))).to(device)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = (
            torch.optim.Adam(params, lr=cfg.lr)
            if cfg.optimizer == "adam"
            else torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
        )
        progress.start(cfg.epochs * steps_per_epoch, "pretrain rotation")
        try:
            for epoch in range(1, cfg.epochs + 1):
                order = torch.from_numpy(rng.permutation(len(fit))).to(device)
                loss_sum, correct, seen = 0.0, 0, 0
                for i in range(0, len(fit), batch):
                    xb, yb = rotate_images(x_fit.index_select(0, order[i : i + batch]))
                    out = net(xb)
                    loss = F.cross_entropy(out, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += float(loss.detach()) * len(yb)
                    correct += int((out.argmax(1) == yb).sum())
                    seen += len(yb)
                    progress.advance(epoch=epoch, loss=loss_sum / seen, rot_acc=correct / seen)
        finally:
            progress.stop()
        net.eval()
        scores = {
            "rotation_accuracy": _rotation_accuracy(net, x_hold),
            "rotation_train_accuracy": _rotation_accuracy(net, x_fit),
            "n_holdout": int(n_hold),
        }
    model.features.train()
    return scores


def _rotation_accuracy(net: Any, x: Any, batch: int = 512) -> float:
    import torch

    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb, yb = rotate_images(x[i : i + batch])
            correct += int((net(xb).argmax(1) == yb).sum())
    return correct / (4 * len(x))
