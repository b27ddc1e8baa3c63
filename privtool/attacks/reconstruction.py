"""Gradient reconstruction attacks: DLG, iDLG and Inverting Gradients (paper 1 §2.4, §5.3).

The threat model (:mod:`privtool.attacks.gradients`): the attacker observes the gradient of a
private target batch (``batch_size`` records, 1 by default) exactly as the run's mechanism
would release it, at the trained checkpoint (``at: trained``) or at the run's initialisation
(``at: init``), and knows the model and the mechanism's settings. Each attack's
:meth:`GradientAttack.reconstruct` gets only that: the model, the release and the observed
gradients; the originals are compared afterwards by :mod:`privtool.attacks.image_metrics`.

* ``dlg`` — Zhu et al. 2019: dummy image and dummy soft label, L2 gradient matching, L-BFGS.
* ``idlg`` — Zhao et al. 2020: the label read off the last layer's gradient, then DLG on the
  image alone.
* ``iga`` — Geiping et al. 2020: cosine gradient matching + α·TV, images boxed to [0, 1], Adam
  on signed gradients with step decay at 3/8, 5/8, 7/8 of the iterations, random restarts
  scored by the gradient match; labels as in iDLG. Defaults are breaching's
  ``invertinggradients`` attack, the reference set-up paper 1 adopts (see :class:`IGAOptions`).
  All targets and restarts of a chunk are optimised together (independent problems, one batched
  backward pass).

This module is the frame they share (:class:`GradientAttack`: targets, release, resume,
scoring, the :class:`~privtool.results.ReconstructionResult`); the attacks live in
:mod:`privtool.attacks.dlg` and :mod:`privtool.attacks.iga`, what they optimise (the matching
objectives of :data:`~privtool.attacks.matching.OBJECTIVES`, TV, label recovery) in
:mod:`privtool.attacks.matching`.
"""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from privtool.attacks.base import Attack, Target
from privtool.attacks.gradients import (
    Grads,
    Release,
    flush_denormals,
    gradient_function,
    make_release,
    parameters_of,
)
from privtool.attacks.image_metrics import (
    save_grid,
    score_reconstructions,
    summarize_reconstructions,
)
from privtool.errors import PrivtoolError
from privtool.results import ReconstructionResult
from privtool.schema import Rule, settings, validate

# --------------------------------------------------------------------------- options


@settings(
    at=Rule(choices=("trained", "init")),
    batch_size=Rule(ge=1),
    iterations=Rule(ge=1),
    lr=Rule(gt=0),
)
@dataclass(frozen=True)
class GradientOptions:
    """Keys every gradient attack has under ``attack.<name>:``."""

    at: str = "trained"  # trained (the run's checkpoint) | init (the run's initial weights)
    batch_size: int = 1  # records in one released gradient
    iterations: int = 300
    lr: float = 1.0

    section: ClassVar[str] = "attack.<gradient attack>"

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class Reconstruction:
    """What an attack returns: images (T, B, C, H, W) in [0, 1], labels (T, B), the final
    matching loss per target (T,). No originals anywhere."""

    images: torch.Tensor
    labels: torch.Tensor
    loss: torch.Tensor


# --------------------------------------------------------------------------- the attack frame


def attacked_model(target: Target, at: str) -> torch.nn.Module:
    """The target model with its trained weights (``trained``) or the exact weights the run
    started from (``init``: the run's seed, then the model constructor, as ``privtool train``
    does), in eval mode on the target's device. The global RNG state is left untouched."""
    if at == "trained":
        return target.build_model()
    from privtool.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(target.params.train.seed)
        model = build_model(target.params.train.model, target.data.shape, target.data.n_classes)
    return model.to(target.device).eval()


def choose_targets(
    pool: np.ndarray, n_targets: int, batch_size: int, seed: int, *, what: str = "attack"
) -> np.ndarray:
    """``n_targets`` batches of ``batch_size`` distinct records from ``pool`` (dataset indices),
    drawn with ``seed``: (n_targets, batch_size)."""
    n = len(pool)
    if batch_size > n:
        raise PrivtoolError(
            f"attack.{what}.batch_size={batch_size} is larger than the {n} "
            f"training records of the target run; lower it"
        )
    if n_targets * batch_size > n:
        raise PrivtoolError(
            f"attack.n_targets × attack.{what}.batch_size = {n_targets} × "
            f"{batch_size} exceeds the {n} training records of the target run; "
            f"lower attack.n_targets"
        )
    rng = np.random.default_rng(seed)
    return np.asarray(pool)[rng.choice(n, size=n_targets * batch_size, replace=False)].reshape(
        n_targets, batch_size
    )


def observe(
    model: torch.nn.Module,
    release: Release,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    generator: torch.Generator,
) -> Grads:
    """Victim side: each of the T private batches (x (T, B, C, H, W), y (T, B)) releases its
    gradient through ``release`` once. Returns (T, *shape) lists."""
    prob = torch.nn.functional.one_hot(y.long(), n_classes).to(x.dtype)
    with torch.no_grad():
        g = gradient_function(model)(x, prob)
        released = [release.release([p[t] for p in g], generator) for t in range(len(x))]
    return [torch.stack([r[i] for r in released]) for i in range(len(g))]


def advance(progress: Any, n: int = 1, **info: Any) -> None:
    """Advance ``progress`` (if any) by ``n`` targets, showing ``info``."""
    if progress is not None:
        for _ in range(n):
            progress.advance(**info)


class ChunkResume:
    """Per-chunk resume of a long attack: each finished chunk of targets is saved atomically
    under ``directory`` (beside the stage's output, ``.<out>.resume``) with a key of
    everything its result depends on; a rerun after a kill loads the chunks whose key matches
    and computes only the rest. ``directory`` None: no resume. The stage removes the
    directory once the attack's output is in place."""

    def __init__(self, directory: Path | None, key: dict[str, Any]) -> None:
        import hashlib
        import json

        self.dir = None if directory is None else Path(directory)
        self.key = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()

    def _path(self, lo: int) -> Path:
        assert self.dir is not None
        return self.dir / f"chunk-{lo:06d}.npz"

    def load(self, lo: int) -> dict[str, np.ndarray] | None:
        if self.dir is None or not self._path(lo).is_file():
            return None
        try:
            with np.load(self._path(lo)) as z:
                if str(z["key"]) != self.key:
                    return None
                return {k: z[k] for k in ("images", "labels", "loss")}
        except (OSError, ValueError, KeyError):  # a torn or foreign file: recompute
            return None

    def save(self, lo: int, arrays: dict[str, np.ndarray]) -> None:
        if self.dir is None:
            return
        import io

        from privtool.artifacts import atomic_write_bytes

        self.dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, key=np.array(self.key), **arrays)
        atomic_write_bytes(self._path(lo), buf.getvalue())


class GradientAttack(Attack):
    """Shared frame of ``dlg``/``idlg``/``iga``: pick targets, release their gradients, call
    :meth:`reconstruct` (which sees no originals), score, write CSV/npz/PNG."""

    kind = "reconstruction"
    Options = GradientOptions
    chunk: ClassVar[int] = 1  # target batches reconstructed together

    def check(self, target: Target) -> None:
        make_release(target.mechanism, target.metrics)  # unknown mechanism / missing settings
        model = attacked_model(target, self.options.at)
        parameters_of(model)
        try:  # gradient matching differentiates the gradient itself (double backward)
            x = torch.rand(1, 1, *target.data.shape, device=target.device, requires_grad=True)
            p = torch.full(
                (1, 1, target.data.n_classes), 1.0 / target.data.n_classes, device=target.device
            )
            sum(g.sum() for g in gradient_function(model)(x, p)).backward()
        except (RuntimeError, NotImplementedError) as e:
            raise PrivtoolError(
                f"model {target.params.train.model!r} has layers whose gradient "
                f"cannot be differentiated again ({str(e).splitlines()[0]}), "
                f"which gradient matching needs; attack a run of another "
                f"model"
            ) from None
        if x.grad is None or not bool(torch.isfinite(x.grad).all()):
            raise PrivtoolError(
                f"model {target.params.train.model!r} gives no usable gradient "
                f"with respect to its input; attack a run of another model"
            )
        choose_targets(
            target.splits["train"],
            self.cfg.n_targets,
            self.options.batch_size,
            self.cfg.seed,
            what=self.name,
        )

    @abstractmethod
    def reconstruct(
        self,
        model: torch.nn.Module,
        release: Release,
        observed: Grads,
        image_shape: tuple[int, ...],
        n_classes: int,
        generator: torch.Generator,
        progress: Any = None,
    ) -> Reconstruction:
        """Attacker side: reconstruct the T batches whose released gradients are ``observed``
        ((T, *shape) lists) — from the model and the release alone."""

    def run(self, target: Target, out: Path, progress: Any = None) -> ReconstructionResult:
        from privtool.artifacts import write_csv

        opt, cfg = self.options, self.cfg
        device = target.device
        model = attacked_model(target, opt.at)
        release = make_release(target.mechanism, target.metrics)
        data = target.data
        idx = choose_targets(
            target.splits["train"], cfg.n_targets, opt.batch_size, cfg.seed, what=self.name
        )
        # Independent streams from attack.seed: the release noise (victim) and the attacker's
        # random starts.
        resume = ChunkResume(
            getattr(self, "resume_dir", None),
            key={
                "attack": self.name,
                "target": target.describe(),
                "options": dataclasses.asdict(opt),
                "seed": cfg.seed,
                "chunk": self.chunk,
                "targets": idx.tolist(),
            },
        )

        t0 = time.time()
        images, labels, losses = [], [], []
        if progress is not None:
            progress.start(len(idx), f"{self.name} ({target.mechanism}, {opt.at})")
        try:
            with flush_denormals():
                for lo in range(0, len(idx), self.chunk):
                    part = idx[lo : lo + self.chunk]
                    done = resume.load(lo)
                    if done is None:
                        # Independent streams per chunk from (attack.seed, chunk): the release
                        # noise (victim) and the attacker's random starts, so a resumed run
                        # equals an uninterrupted one.
                        victim_seed, attacker_seed = (
                            int(s.generate_state(1)[0])
                            for s in np.random.SeedSequence([cfg.seed, lo]).spawn(2)
                        )
                        victim_gen = torch.Generator(device=device).manual_seed(victim_seed)
                        attacker_gen = torch.Generator(device=device).manual_seed(attacker_seed)
                        x = torch.from_numpy(data.x[part]).to(device)
                        y = torch.from_numpy(data.y[part]).to(device)
                        observed = observe(model, release, x, y, data.n_classes, victim_gen)
                        del x, y  # the attacker below never sees the private batch
                        rec = self.reconstruct(
                            model,
                            release,
                            observed,
                            tuple(data.shape),
                            data.n_classes,
                            attacker_gen,
                            progress,
                        )
                        done = {
                            "images": rec.images.detach().clamp(0, 1).cpu().numpy(),
                            "labels": rec.labels.detach().cpu().numpy(),
                            "loss": rec.loss.detach().cpu().numpy(),
                        }
                        resume.save(lo, done)
                    else:
                        advance(progress, len(part), resumed=lo + len(part))
                    images.append(done["images"])
                    labels.append(done["labels"])
                    losses.append(done["loss"])
        finally:
            if progress is not None:
                progress.stop()
        seconds = time.time() - t0

        recon = np.concatenate(images).astype(np.float32)
        rec_labels = np.concatenate(labels).astype(np.int64)
        loss = np.concatenate(losses).astype(np.float64)
        originals = data.x[idx]
        true = data.y[idx]
        scores = score_reconstructions(originals, recon)  # the separate scoring step
        perm = scores["perm"]
        matched = np.take_along_axis(recon, perm[:, :, None, None, None], axis=1)
        matched_labels = np.take_along_axis(rec_labels, perm, axis=1)

        rows = []
        for t in range(len(idx)):
            for b in range(idx.shape[1]):
                rows.append(
                    {
                        "target": t,
                        "slot": b,
                        "index": int(idx[t, b]),
                        "label": int(true[t, b]),
                        "recovered_label": int(matched_labels[t, b]),
                        "ssim": float(scores["ssim"][t, b]),
                        "mse": float(scores["mse"][t, b]),
                        "psnr": float(scores["psnr"][t, b]),
                        "loss": float(loss[t]),
                    }
                )
        write_csv(out / "per_target.csv", rows)
        np.savez_compressed(
            out / "reconstructions.npz",
            indices=idx,
            labels=true,
            originals=originals,
            reconstructions=recon,
            matched=matched,
            recovered_labels=matched_labels,
            loss=loss,
        )
        n_show = min(10, idx.size)
        flat_o = originals.reshape(-1, *originals.shape[2:])[:n_show]
        flat_r = matched.reshape(-1, *matched.shape[2:])[:n_show]
        flat_s = scores["ssim"].ravel()[:n_show]
        save_grid(
            out / "grid.png",
            [("original", list(flat_o)), (self.name, list(flat_r))],
            title=f"{self.name} vs {target.mechanism} ({opt.at}); "
            f"SSIM mean {scores['ssim'].mean():.2f}",
            captions=[f"{s:.2f}" for s in flat_s],
        )

        return ReconstructionResult(
            **summarize_reconstructions(scores),
            label_accuracy=float((matched_labels == true).mean()),
            loss=float(np.median(loss)),
            n_targets=int(len(idx)),
            n_images=int(idx.size),
            batch_size=opt.batch_size,
            at=opt.at,
            iterations=opt.iterations,
            seconds=round(seconds, 3),
            release=release.describe(),
        )
