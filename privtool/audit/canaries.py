"""Canaries: the records an audit adds to a training run, and how they are scored.

The one-run design (Steinke, Nasr & Jagielski 2023): M canaries, each *included*
independently with probability ½. A canary is one record of the audit run's training set and
is sampled like every other record by the run's own sampler (Poisson for ``gaussian``,
fixed-size without replacement for ``vmf``, shuffled epochs for ``none``) over n + M slots whose
schedule (rate, steps, σ or κ) is fixed before the coins are drawn (:class:`CanaryMechanism`),
so the audit run's accountant covers each canary exactly as it covers a real record. The audit never changes how the mechanism adds
noise; it only adds records.

What "not included" means follows the mechanism's neighbouring relation, so that flipping one
canary's coin is exactly one neighbouring change the accountant covers:

- add/remove one record (``gaussian``, ``none``): an excluded canary is absent;
- replace one record (``vmf``): every canary slot is present; an excluded canary is replaced by
  its *twin* — the negated gradient (the antipodal direction, VMF's worst case) or the same
  image with another wrong label.

Canary kinds:

- ``input`` (black box): a real image of a split the run does not train on (default
  ``shadow``), with a random wrong label a (in) and a second wrong label b (the twin). Score =
  loss(x, b) − loss(x, a) on the trained model: a memorised canary has a low loss on a.
- ``gradient`` (white box; Nasr et al. 2023, Steinke et al. 2023 §6): a vector c of norm C (the
  clipping bound) that is a Dirac at one parameter coordinate (distinct coordinates, the
  quietest under real data: :func:`gradient_activity`) or a uniformly random direction, substituted as the per-sample gradient of its slot in every step
  that samples the slot, before the mechanism clips / normalises, sums and noises (Opacus'
  ``p.grad_sample`` rows, read by the Gaussian and the VMF optimizers alike). Score =
  Σ_t ⟨c, g_t⟩ over the released (noised, averaged) gradients g_t = ⟨c, Σ_t g_t⟩.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from privtool.errors import PrivtoolError
from privtool.mechanisms.base import MECHANISMS, Mechanism, Schedule, Stepper

CANARY_KINDS = ("input", "gradient")
DIRECTIONS = ("dirac", "random")


def replaces(mech: str) -> bool:
    """True where the mechanism's relation is replace-one (an excluded canary has a twin)."""
    return MECHANISMS.get(mech).relation.startswith("replace")


def check_supported(kind: str, mech: str) -> None:
    if kind not in CANARY_KINDS:
        raise PrivtoolError(
            f"--canary {kind!r} is not a canary kind; valid: {', '.join(CANARY_KINDS)}"
        )
    # each mechanism names the canary kinds that can audit it (Mechanism.canaries);
    # class/subclass protect units, not records
    supported = [m for m in MECHANISMS if kind in MECHANISMS.get(m).canaries]
    if mech not in supported:
        raise PrivtoolError(
            f"{kind} canaries cannot audit a {mech!r} run (they audit "
            f"{', '.join(supported)}); class/subclass DP protects whole "
            f"units, which record canaries do not test"
        )


def draw_inclusion(m: int, seed: int) -> np.ndarray:
    """Each canary in with probability ½, independently (the one-run design)."""
    return np.random.default_rng([seed, 16]).random(m) < 0.5


# ----------------------------------------------------------------------------- input canaries


def input_canaries(
    y: np.ndarray, pool: np.ndarray, m: int, n_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """M images from ``pool`` (dataset indices) with two distinct wrong labels each:
    (indices, label_in, label_twin)."""
    if m > len(pool):
        raise PrivtoolError(
            f"audit.canaries={m} input canaries need as many images of the "
            f"canary split, which has {len(pool)}; lower --canaries or pick "
            f"another audit.split"
        )
    if n_classes < 3:
        raise PrivtoolError("input canaries need at least 3 classes (two wrong labels each)")
    rng = np.random.default_rng([seed, 17])
    idx = np.sort(rng.choice(pool, size=m, replace=False))
    true = y[idx]
    a = (true + rng.integers(1, n_classes, m)) % n_classes
    b = (true + rng.integers(1, n_classes - 1, m)) % n_classes
    b = np.where(b == a, (true + n_classes - 1) % n_classes, b)
    assert not ((a == true) | (b == true) | (a == b)).any()
    return idx, a.astype(np.int64), b.astype(np.int64)


def input_scores(model: Any, x: Any, label_in: Any, label_twin: Any, batch_size: int) -> np.ndarray:
    """loss(x, b) − loss(x, a) per canary (higher ⇒ "in")."""
    import torch
    import torch.nn.functional as F

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i : i + batch_size])
            la = F.cross_entropy(logits, label_in[i : i + batch_size], reduction="none")
            lb = F.cross_entropy(logits, label_twin[i : i + batch_size], reduction="none")
            out.append((lb - la).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


# -------------------------------------------------------------------------- gradient canaries


class GradientCanaries:
    """M canary gradients of norm ``norm`` over a flat parameter vector of ``dim`` entries:
    Diracs at distinct random coordinates, or uniformly random directions (regenerated from a
    per-canary seed, so no M × d matrix is held)."""

    def __init__(
        self,
        m: int,
        dim: int,
        *,
        norm: float,
        direction: str,
        seed: int,
        activity: np.ndarray | None = None,
    ) -> None:
        if direction not in DIRECTIONS:
            raise PrivtoolError(
                f"audit.direction={direction!r} is not allowed: {' or '.join(DIRECTIONS)}"
            )
        if direction == "dirac" and m > dim:
            raise PrivtoolError(
                f"{m} Dirac canaries need as many distinct coordinates; the "
                f"model has {dim} parameters; lower --canaries"
            )
        self.m, self.dim, self.norm, self.direction, self.seed = (
            m,
            dim,
            float(norm),
            direction,
            seed,
        )
        order = np.random.default_rng([seed, 18]).permutation(dim)  # random tie-break
        if activity is not None:  # the quietest coordinates first
            order = order[np.argsort(np.asarray(activity)[order], kind="stable")]
        self.coords = order[:m]

    def rows(self, ids: np.ndarray, signs: np.ndarray, device: Any, dtype: Any) -> Any:
        """(len(ids), dim) canary gradients, canary ``ids[j]`` times ``signs[j]``."""
        import torch

        out = torch.zeros((len(ids), self.dim), device=device, dtype=dtype)
        for j, (i, s) in enumerate(zip(ids, signs)):
            if self.direction == "dirac":
                out[j, int(self.coords[i])] = s * self.norm
            else:
                out[j] = s * self._random(int(i), device, dtype)
        return out

    def clipped_sum(
        self, ids: np.ndarray, signs: np.ndarray, max_norm: float, device: Any, dtype: Any
    ) -> Any:
        """Σ_j clip(signs[j]·c_ids[j]) as one flat vector, clipped exactly as Opacus' flat
        clipping does (factor min(1, C/(‖c‖ + 10⁻⁶))): what appending the rows would add to
        the clipped sum, without materialising a (rows × d) matrix."""
        import torch

        factor = min(1.0, max_norm / (self.norm + 1e-6))
        out = torch.zeros(self.dim, device=device, dtype=torch.float64)
        if self.direction == "dirac":
            coords = torch.from_numpy(self.coords[ids]).to(device)
            out[coords] = torch.as_tensor(
                signs * self.norm * factor, dtype=torch.float64, device=device
            )
        else:
            for i, sg in zip(ids, signs):
                out += sg * factor * self._random(int(i), device, torch.float64)
        return out.to(dtype)

    def _random(self, i: int, device: Any, dtype: Any) -> Any:
        import torch

        g = torch.Generator(device="cpu")
        g.manual_seed(int(np.random.SeedSequence([self.seed, 19, i]).generate_state(1)[0]))
        v = torch.randn(self.dim, generator=g, dtype=torch.float64)
        return (v * (self.norm / v.norm())).to(device=device, dtype=dtype)

    def scores(self, released_sum: Any) -> np.ndarray:
        """⟨c_i, Σ_t g_t⟩ for every canary."""
        import torch

        flat = released_sum.detach().double().cpu()
        if self.direction == "dirac":
            return (self.norm * flat[torch.from_numpy(self.coords)]).numpy()
        return np.array(
            [float(self._random(i, "cpu", torch.float64) @ flat) for i in range(self.m)]
        )


def gradient_activity(
    model: Any, x: Any, y: Any, *, batches: int = 32, batch_size: int = 128
) -> np.ndarray:
    """Per parameter coordinate, the largest |mini-batch gradient| of ``model`` over a few
    batches of (x, y): Dirac canaries go where real gradients are quietest (weights of always-
    blank pixels, dead units), so the real data's updates do not drown them. Computed on data
    the run does not train on, before training; it never sees the canaries' coins, so the
    one-run theorem's independence holds."""
    import torch
    import torch.nn.functional as F

    params = [p for p in model.parameters() if p.requires_grad]
    act = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    was = model.training
    model.eval()
    for i in range(0, min(len(x), batches * batch_size), batch_size):
        grads = torch.autograd.grad(
            F.cross_entropy(model(x[i : i + batch_size]), y[i : i + batch_size]), params
        )
        act = torch.maximum(act, torch.cat([g.reshape(-1) for g in grads]).abs().double().cpu())
    model.train(was)
    return act.numpy()


class CanaryMechanism(Mechanism):
    """The run's own mechanism over n real records plus M canary slots (rows n … n+M−1).

    The schedule — hence the sampling rate, the step count and any σ / κ solved for an ε
    target — is that of all n + M slots, fixed before the coins are drawn, so it never depends
    on which canaries are in. Batches come from the mechanism's own sampler; under add/remove
    an excluded canary's slot is *absent*: it is dropped from every batch that draws it, which
    for Poisson sampling is exactly Poisson sampling of the dataset without it. Under
    replace-one every slot is present (the excluded canary's twin). Gradient canaries: the
    batch's sampled slots are appended as per-sample gradient rows (the canary, or the negated
    canary for a twin) to Opacus' ``p.grad_sample`` before the optimizer privatizes the batch —
    their placeholder images are never forwarded — and the released gradients are summed for
    scoring. Accounting, noise, clipping and settings are the wrapped
    mechanism's own."""

    def __init__(
        self,
        cfg: Any,
        schedule: Schedule,
        *,
        n_real: int,
        member: np.ndarray,
        twin: bool,
        canaries: GradientCanaries | None = None,
    ) -> None:
        self.inner = MECHANISMS.get(cfg.mech)(cfg, schedule)
        super().__init__(cfg, self.inner.schedule)
        self.name = self.inner.name  # type: ignore[misc]
        self.relation = self.inner.relation  # type: ignore[misc]
        self.is_private = self.inner.is_private  # type: ignore[misc]
        self.ddp_adapter = self.inner.ddp_adapter  # type: ignore[misc]
        self.epsilon_key = self.inner.epsilon_key
        self.n_real, self.member, self.twin = n_real, np.asarray(member, bool), twin
        self.present = np.ones_like(self.member) if twin else self.member
        self.sign = np.where(self.member, 1.0, -1.0)
        self.canaries = canaries
        self.released_sum: Any = None
        #: Dirac canaries: ⟨c_i, g_t⟩ per step t (rows) and canary i, for per-step scores
        self.per_step: list[np.ndarray] = []
        self.appearances = np.zeros(len(self.member), dtype=np.int64)
        self._slots = np.zeros(0, dtype=np.int64)  # canary slots of the current batch

    def prepare(self, x_train: Any, y_train: Any) -> None:
        self.inner.prepare(x_train, y_train)

    def calibrate(self, model: Any) -> None:
        self.inner.calibrate(model)

    def batches(self, epoch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        for idx in self.inner.batches(epoch, rng):
            slot = idx >= self.n_real
            keep = ~slot
            keep[slot] = self.present[idx[slot] - self.n_real]
            idx = idx[keep]
            if self.canaries is None:  # input canaries: their slots are real images
                np.add.at(self.appearances, idx[idx >= self.n_real] - self.n_real, 1)
                yield idx
                continue
            # gradient canaries: their rows are appended to the batch's per-sample gradients,
            # so no placeholder image is forwarded (a step with no real record releases noise
            # only and skips its canaries: probability (1 − q)^n)
            self._slots = idx[idx >= self.n_real] - self.n_real
            np.add.at(self.appearances, self._slots, 1)
            yield idx[idx < self.n_real]

    def make_stepper(self, model: Any, optimizer: Any, generator: Any) -> Stepper:
        import torch

        step = self.inner.make_stepper(model, optimizer, generator)
        if self.canaries is None:  # input canaries: records like any other
            return step
        opt = getattr(step, "optimizer", None)
        if opt is None or not hasattr(opt, "clip_and_accumulate"):
            raise PrivtoolError(
                f"gradient canaries need an Opacus DP optimizer; {self.name!r} has none"
            )
        params = list(opt.params)
        sizes = [p.numel() for p in params]
        original = opt.clip_and_accumulate
        coords = (
            torch.from_numpy(self.canaries.coords).to(params[0].device)
            if self.canaries.direction == "dirac"
            else None
        )

        def record(o: Any) -> None:
            flat = torch.cat([p.grad.detach().reshape(-1) for p in params]).double()
            self.released_sum = flat if self.released_sum is None else self.released_sum + flat
            if coords is not None:
                self.per_step.append((self.canaries.norm * flat[coords]).cpu().numpy())

        if type(opt).__name__ == "DPOptimizer":  # Opacus' flat clipping (Gaussian): add the
            # canaries' clipped sum directly — the same sum as appending their rows
            def clip_and_accumulate() -> None:
                original()
                if len(self._slots):
                    flat = self.canaries.clipped_sum(
                        self._slots,
                        self.sign[self._slots],
                        opt.max_grad_norm,
                        params[0].device,
                        params[0].dtype,
                    )
                    for p, part in zip(params, torch.split(flat, sizes)):
                        p.summed_grad = p.summed_grad + part.view_as(p)

            opt.clip_and_accumulate = clip_and_accumulate
            opt.attach_step_hook(record)
            return step

        def clip_and_accumulate() -> None:  # other optimizers (VMF): per-sample rows
            if len(self._slots):
                rows = self.canaries.rows(
                    self._slots, self.sign[self._slots], params[0].device, params[0].dtype
                )
                k = len(self._slots)
                for p, part in zip(params, torch.split(rows, sizes, dim=1)):
                    gs = opt._get_flat_grad_sample(p)
                    p.grad_sample = torch.cat([gs, part.reshape(k, *p.shape).to(gs.dtype)])
            original()

        opt.clip_and_accumulate = clip_and_accumulate
        opt.attach_step_hook(record)
        return step

    def privacy(self, steps: int) -> dict[str, Any]:
        return self.inner.privacy(steps)

    def delta_population(self) -> tuple[int, str]:
        return self.inner.delta_population()

    def settings(self) -> dict[str, Any]:
        return self.inner.settings()

    def artifacts(self) -> dict[str, Any]:
        return self.inner.artifacts()

    @property
    def warnings(self) -> list[str]:
        return list(getattr(self.inner, "warnings", []) or [])

    def scores(self, kind: str = "sum") -> np.ndarray:
        """Every canary's score: ``sum`` = ⟨c, Σ_t g_t⟩; ``spikes`` (Dirac only) =
        :func:`spike_scores` of the per-step projections."""
        if self.canaries is None or self.released_sum is None:
            raise PrivtoolError("the audit run released no gradient canary; nothing to score")
        if kind == "spikes":
            if not self.per_step:
                raise PrivtoolError(
                    "audit.score=spikes needs Dirac canaries (audit.direction=dirac)"
                )
            unit = self.canaries.norm**2 / self.schedule.batch_size  # one appearance
            return spike_scores(np.stack(self.per_step) / unit, self.schedule.sample_rate)
        return self.canaries.scores(self.released_sum)


def spike_scores(z: np.ndarray, rate: float, window: int = 10) -> np.ndarray:
    """Per-step white-box score of canaries whose per-step projections ``z`` (steps × canaries)
    are in units of one appearance: each step's value minus the mean of its ``window``
    neighbours on each side (the real data's slowly drifting gradient at that coordinate), then
    the per-step log-likelihood ratio of "sampled with probability q = ``rate``, adding 1"
    against "absent" under Gaussian noise of scale σ̂ (the median over canaries of their robust
    residual scale), summed over steps: Σ_t log(1 − q + q·exp((r_t − ½)/σ̂²)). Any fixed
    function of the released updates is a valid attack; this one is the Neyman–Pearson test of
    a Poisson-sampled, Gaussian-noised record (Nasr et al. 2023), made robust to real-gradient
    drift. It never sees the coins; σ̂ pools all canaries alike."""
    z = np.asarray(z, dtype=np.float64)
    t = z.shape[0]
    window = max(1, min(window, (t - 1) // 2))  # 'same' convolution needs 2w + 1 <= steps
    if t < 3:
        raise PrivtoolError("audit.score=spikes needs at least 3 steps; use audit.score=sum")
    kernel = np.ones(2 * window + 1)
    kernel[window] = 0.0
    counts = np.convolve(np.ones(t), kernel, mode="same")[:, None]
    trend = np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 0, z) / counts
    r = z - trend
    mad = np.median(np.abs(r - np.median(r, axis=0)), axis=0)
    sigma = max(float(np.median(1.4826 * mad)), 1e-12)
    q = min(max(rate, 1e-12), 1 - 1e-12)
    return np.logaddexp(np.log1p(-q), np.log(q) + (r - 0.5) / sigma**2).sum(axis=0)
