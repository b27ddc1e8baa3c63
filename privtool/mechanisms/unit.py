"""``class`` / ``subclass``: class- and subclass-level DP-SGD (paper 3, §IV, Alg. 2).

Units are the classes (``class``) or k-means clusters inside each class (``subclass``,
``train.k_sub`` per class, on pixels or on the model's embeddings). Each step samples units —
independently with probability q (``poisson``) or k = round(qK) of them without replacement
(``fixed``) — and uses every record of the sampled units. Each unit's gradient is summed chunk
by chunk (``train.batch_size`` records: Opacus per-sample gradients summed by unit, or one plain
backward per unit where units are large), averaged, clipped to S and added to the total as soon
as the unit is complete; N(0, σ²S²·I) is added and the sum divided by qK (Alg. 2 lines 5–9).
Memory is bounded by the chunk, never by a unit's size. The unit id of every training record is
saved with the run (``units.npy``). Accounting: :mod:`privtool.accounting.unit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from privtool.accounting.query import EpsilonQuery
from privtool.accounting.query import steps_per_epoch as epoch_steps
from privtool.accounting.unit import record_level as record_level_guarantee
from privtool.accounting.unit import unit_epsilon, unit_noise_multiplier, units_per_step
from privtool.errors import PrivtoolError
from privtool.mechanisms.base import MECHANISMS, Mechanism, Schedule, Stepper, finite_or_none
from privtool.mechanisms.gaussian import GaussianRelease


@dataclass(frozen=True)
class UnitSchedule(Schedule):
    """An epoch is 1/q steps (each unit is expected once); the sample rate is q over units."""

    unit_rate: float = 0.2

    def __post_init__(self) -> None:
        if self.n < 1:
            raise PrivtoolError("the training split is empty; enlarge data.splits.train")

    @property
    def sample_rate(self) -> float:
        return self.unit_rate

    @property
    def steps_per_epoch(self) -> int:
        return epoch_steps(1 / self.unit_rate)


def form_units(
    y: np.ndarray, *, k_sub: int, seed: int, features: np.ndarray | None = None
) -> np.ndarray:
    """Unit id per record: its class (k_sub = 1) or its k-means cluster within its class.

    Deterministic for ``seed``; k_sub equal to a class's size makes every record its own unit.
    """
    y = np.asarray(y)
    units = np.empty(len(y), dtype=np.int64)
    next_id = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if k_sub > len(idx):
            raise PrivtoolError(
                f"train.k_sub={k_sub} is larger than class {int(c)}, which has "
                f"{len(idx)} training records; lower train.k_sub"
            )
        if k_sub == 1:
            labels = np.zeros(len(idx), dtype=np.int64)
        elif k_sub == len(idx):
            labels = np.arange(len(idx))
        else:
            from sklearn.cluster import KMeans

            feats = features[idx].reshape(len(idx), -1).astype(np.float64)
            labels = KMeans(n_clusters=k_sub, n_init=3, random_state=seed).fit_predict(feats)
            # an empty cluster would be a unit without records: renumber the used ones densely
            labels = np.unique(labels, return_inverse=True)[1]
        units[idx] = next_id + labels
        next_id += int(labels.max()) + 1
    return units


class UnitRelease(GaussianRelease):
    """Class/subclass DP-SGD (paper 3, Alg. 2): a unit's average gradient is clipped to S and
    released with N(0, σ²S²). A batch of one record is one unit, so for the attacker this is
    the Gaussian release with S = ``max_grad_norm``."""

    name = "class"


class _UnitBase(Mechanism):
    """Unit-level DP-SGD; the guarantee's relation is add/remove (poisson) or replace (fixed)
    one unit, its record-level guarantee add/remove one record by group privacy over the
    largest unit (:mod:`privtool.accounting.unit`, which states the theorems)."""

    kind = "class"
    ddp_adapter = "units"
    release_class = UnitRelease
    #: mean records per sampled unit from which one plain backward per unit beats Opacus
    #: per-sample gradients (measured: CNN of paper 3, 2-core CPU, crossover ≈ 40)
    LOOP_MIN_UNIT = 48
    #: set by privtool.distributed: only rank 0 adds the noise (share 1, others 0), and the
    #: noisy sums of all ranks are summed in place (``all_reduce``) before the division by qK
    noise_share: float = 1.0
    all_reduce: Any = None

    def __init__(self, cfg: Any, schedule: Schedule) -> None:
        super().__init__(
            cfg,
            UnitSchedule(
                n=schedule.n,
                batch_size=schedule.batch_size,
                epochs=schedule.epochs,
                unit_rate=cfg.unit_sample_rate,
            ),
        )
        self.epsilon_key = f"epsilon_{self.kind}"
        self.relation = (
            f"add/remove one {self.kind}"
            if cfg.unit_sampling == "poisson"
            else f"replace one {self.kind}"
        )
        self.warnings: list[str] = []
        self._batch_units: np.ndarray = np.zeros(0, dtype=np.int64)

    @property
    def k_sub(self) -> int:
        return 1

    @classmethod
    def accountant(cls, q: EpsilonQuery) -> dict[str, Any]:
        n_steps = q.n_steps()
        if q.noise_multiplier is None:
            raise PrivtoolError(f"--noise-multiplier is required for --mech {cls.name}")
        if q.unit_sampling == "fixed" and q.units is None:
            raise PrivtoolError(
                "--units K (number of classes/subclasses) is required with --unit-sampling fixed"
            )
        out = unit_epsilon(
            kind=cls.kind,
            sampling=q.unit_sampling,
            noise_multiplier=q.noise_multiplier,
            sample_rate=q.sample_rate,
            steps=n_steps,
            delta=q.delta,
            n_units=q.units or 1,
            accountant=q.accountant,
            k_sub=q.k_sub,
        )
        return {
            "mechanism": cls.name,
            "noise_multiplier": q.noise_multiplier,
            "unit_sample_rate": q.sample_rate,
            "steps": n_steps,
            "unit_sampling": q.unit_sampling,
            **out,
        }

    @classmethod
    def query_population(cls, *, n: int | None, n_units: int | None) -> tuple[int | None, str]:
        """Unit-level DP: δ is compared with the number of units K (--units)."""
        return n_units, f"{cls.kind} units"

    @classmethod
    def select_cost(
        cls, privacy: Mapping[str, Any], metrics: Mapping[str, Any], *, record_level: bool
    ) -> tuple[float | None, float, str]:
        """``record_level`` False: the unit-level headline (per class for ``class``); True:
        per record (``epsilon_record``: group privacy over the unit, recomputed where a
        checkpoint entry lacks ``delta_record``)."""
        delta = float(privacy.get("delta") or 0.0)
        unit_eps = finite_or_none(privacy.get(f"epsilon_{cls.kind}"))
        if not record_level:
            relation = str(metrics.get("unit_relation") or f"add/remove one {cls.kind}")
            return unit_eps, delta, relation
        if "delta_record" in privacy:
            return (
                finite_or_none(privacy.get("epsilon_record")),
                float(privacy["delta_record"]),
                cls.record_relation,
            )
        g = int(metrics.get("record_group_size") or 1)
        rec = record_level_guarantee(
            math.inf if unit_eps is None else unit_eps, delta, group_size=g
        )
        return rec["epsilon_record"], float(rec["delta_record"]), cls.record_relation

    def prepare(self, x_train: Any, y_train: Any) -> None:
        self._x, self._y = x_train, y_train.cpu().numpy()
        if self.kind == "subclass" and self.cfg.subclass_features == "embeddings":
            self.units = None  # formed in calibrate(), which has the model
        else:
            self.units = form_units(
                self._y, k_sub=self.k_sub, seed=self.cfg.seed, features=x_train.cpu().numpy()
            )

    def calibrate(self, model: nn.Module) -> None:
        if self.units is None:
            with torch.no_grad():
                emb = (
                    torch.cat(
                        [model.embed(self._x[i : i + 1024]) for i in range(0, len(self._x), 1024)]
                    )
                    .cpu()
                    .numpy()
                )
            self.units = form_units(self._y, k_sub=self.k_sub, seed=self.cfg.seed, features=emb)
        self.n_units = int(self.units.max()) + 1
        self.members = [np.flatnonzero(self.units == u) for u in range(self.n_units)]
        cfg, s = self.cfg, self.schedule
        self.noise_multiplier = cfg.noise_multiplier
        if cfg.epsilon is not None:
            self.noise_multiplier = self.solve(cfg.epsilon)
        self.denominator = (
            s.sample_rate * self.n_units
            if cfg.unit_sampling == "poisson"
            else units_per_step(s.sample_rate, self.n_units)
        )

    def solve(self, target_epsilon: float) -> float:
        """σ for a unit-level ``target_epsilon`` over the K units formed by :meth:`prepare`."""
        cfg, s = self.cfg, self.schedule
        return unit_noise_multiplier(
            target_epsilon=target_epsilon,
            sampling=cfg.unit_sampling,
            sample_rate=s.sample_rate,
            steps=s.steps,
            delta=cfg.delta,
            n_units=self.n_units,
            accountant=cfg.accountant,
        )

    def batches(self, epoch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        q, k_units = self.schedule.sample_rate, self.n_units
        for _ in range(self.schedule.steps_per_epoch):
            if self.cfg.unit_sampling == "poisson":
                chosen = np.flatnonzero(rng.random(k_units) < q)
            else:
                chosen = np.sort(
                    rng.choice(k_units, size=units_per_step(q, k_units), replace=False)
                )
            idx = (
                np.concatenate([self.members[u] for u in chosen])
                if len(chosen)
                else np.zeros(0, dtype=np.int64)
            )
            self._batch_units = self.units[idx]
            yield idx

    def make_stepper(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, generator: Any
    ) -> Stepper:
        """Alg. 2 lines 5–9, streamed over the batch sorted by unit: each unit's gradient sum is
        finished — divided by its size, clipped to S, added to the total — as soon as its last
        record has passed, then N(0, σ²S²) is added and the total divided by qK.

        Two exact ways to get a unit's sum, picked per step: where the sampled units average at
        least ``LOOP_MIN_UNIT`` records, one plain backward per unit (chunks of
        ``train.batch_size``; memory: one gradient); otherwise Opacus per-sample gradients of a
        chunk, summed by unit (memory: one chunk's per-sample gradients and one gradient per unit
        in the chunk). Never all per-sample gradients of a unit at once."""
        from opacus.grad_sample import GradSampleModule

        gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
        params = [p for p in model.parameters() if p.requires_grad]
        chunk = self.cfg.batch_size
        S, sigma = self.cfg.max_grad_norm, self.noise_multiplier

        def per_sample_pass(
            x: torch.Tensor, y: torch.Tensor, units: np.ndarray, total: list[torch.Tensor]
        ) -> tuple[float, int]:
            carry: list[torch.Tensor] | None = None  # sum of the unit still open at a chunk end
            carry_n = 0
            loss_sum, correct = 0.0, 0
            for i in range(0, len(x), chunk):
                j = min(i + chunk, len(x))
                u = units[i:j]
                local = np.concatenate([[0], np.cumsum(u[1:] != u[:-1])]).astype(np.int64)
                n_loc = int(local[-1]) + 1  # runs (units) in this chunk
                local_t = torch.from_numpy(local).to(x.device)
                out = gsm(x[i:j])
                loss = F.cross_entropy(out, y[i:j], reduction="sum")
                loss.backward()
                sums = []
                for p in params:
                    acc = torch.zeros((n_loc, *p.shape), device=p.device, dtype=p.dtype)
                    sums.append(acc.index_add_(0, local_t, p.grad_sample))
                    p.grad_sample = None
                    p.grad = None
                counts = np.bincount(local, minlength=n_loc)
                if carry is not None:  # the first run continues the unit open before
                    for acc, c in zip(sums, carry):
                        acc[0] += c
                    counts[0] += carry_n
                open_end = j < len(x) and units[j] == units[j - 1]  # last unit goes on
                done = n_loc - 1 if open_end else n_loc
                if done:
                    _add_clipped_means(total, [a[:done] for a in sums], counts[:done], S)
                carry = None if done == n_loc else [a[n_loc - 1] for a in sums]
                carry_n = 0 if carry is None else int(counts[n_loc - 1])
                loss_sum += float(loss.detach())
                correct += int((out.detach().argmax(1) == y[i:j]).sum())
            return loss_sum, correct

        def per_unit_pass(
            x: torch.Tensor, y: torch.Tensor, units: np.ndarray, total: list[torch.Tensor]
        ) -> tuple[float, int]:
            starts = np.flatnonzero(np.concatenate([[True], units[1:] != units[:-1]]))
            ends = np.append(starts[1:], len(units))
            loss_sum, correct = 0.0, 0
            gsm.disable_hooks()
            try:
                for a, b in zip(starts, ends):
                    for i in range(a, b, chunk):
                        j = min(i + chunk, b)
                        out = model(x[i:j])
                        loss = F.cross_entropy(out, y[i:j], reduction="sum")
                        loss.backward()
                        loss_sum += float(loss.detach())
                        correct += int((out.detach().argmax(1) == y[i:j]).sum())
                    grads = [
                        (torch.zeros_like(p) if p.grad is None else p.grad).unsqueeze(0)
                        for p in params
                    ]
                    _add_clipped_means(total, grads, np.array([b - a]), S)
                    for p in params:
                        p.grad = None
            finally:
                gsm.enable_hooks()
            return loss_sum, correct

        def step(x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
            optimizer.zero_grad(set_to_none=True)
            units = self._batch_units
            order = np.argsort(units, kind="stable")
            if not np.array_equal(order, np.arange(len(units))):  # make each unit contiguous
                units = units[order]
                order_t = torch.from_numpy(order).to(x.device)
                x, y = x.index_select(0, order_t), y.index_select(0, order_t)
            total = [torch.zeros_like(p) for p in params]
            n_units = len(np.unique(units))
            big = n_units and len(units) >= self.LOOP_MIN_UNIT * n_units
            loss_sum, correct = (per_unit_pass if big else per_sample_pass)(x, y, units, total)
            for p, t in zip(params, total):
                t += torch.normal(
                    0.0,
                    sigma * S * self.noise_share,
                    size=p.shape,
                    device=p.device,
                    generator=generator,
                )
            if self.all_reduce is not None:
                self.all_reduce(total)
            for p, t in zip(params, total):
                p.grad = t / self.denominator
            optimizer.step()
            return (loss_sum / len(x) if len(x) else float("nan")), correct

        return step

    def privacy(self, steps: int) -> dict[str, Any]:
        out = unit_epsilon(
            kind=self.kind,
            sampling=self.cfg.unit_sampling,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.schedule.sample_rate,
            steps=steps,
            delta=self.cfg.delta,
            n_units=self.n_units,
            accountant=self.cfg.accountant,
            k_sub=self.k_sub,
        )
        w = out.pop("warning", None)
        if w and w not in self.warnings:
            self.warnings.append(w)
        return out

    def settings(self) -> dict[str, Any]:
        return {
            "unit_kind": self.kind,
            "n_units": self.n_units,
            "k_sub": self.k_sub,
            "unit_sample_rate": self.schedule.sample_rate,
            "sample_rate": self.schedule.sample_rate,
            "unit_sampling": self.cfg.unit_sampling,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.cfg.max_grad_norm,
            "batch_size": self.cfg.batch_size,
            "largest_unit": int(max(len(m) for m in self.members)),
        }

    def delta_population(self) -> tuple[int, str]:
        """Unit-level DP: δ is compared with the number of units K (known after calibrate)."""
        return self.n_units, f"{self.kind} units"

    def artifacts(self) -> dict[str, np.ndarray]:
        """Unit id of every training record (in train-split order), saved as units.npy."""
        return {"units.npy": self.units}


def _add_clipped_means(
    total: list[torch.Tensor], sums: list[torch.Tensor], counts: np.ndarray, max_grad_norm: float
) -> None:
    """total += Σ_u clip_S(sum_u / n_u) over the units of ``sums`` (paper 3, Alg. 2 lines 5–7)."""
    n_u = len(counts)
    c = torch.as_tensor(counts, dtype=sums[0].dtype, device=sums[0].device)
    means = [a / c.view(-1, *([1] * (a.dim() - 1))) for a in sums]
    norms = torch.stack([m.reshape(n_u, -1).norm(dim=1) for m in means], 1).norm(dim=1)
    factor = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    for t, m in zip(total, means):
        t += torch.einsum("u,u...->...", factor, m)


@MECHANISMS.register("class")
class ClassDP(_UnitBase):
    name = kind = "class"


@MECHANISMS.register("subclass")
class SubclassDP(_UnitBase):
    name = kind = "subclass"

    @property
    def k_sub(self) -> int:
        return self.cfg.k_sub
