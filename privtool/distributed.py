"""One DP training across processes (``train.distributed=ddp`` under ``torchrun``), SPEC §11.

Every rank draws the *same global batch* from the sampling generator (rank 0's state is
broadcast, so a secret seed works too), keeps its share, and the ranks' shares are summed by an
all-reduce before the division by the batch size. The released update therefore has exactly the
distribution it has in one process, and the accountant of the mechanism is used unchanged:

* ``gaussian`` (add/remove one record, Poisson sampling; Opacus RDP/PRV, Abadi et al. 2016 /
  Mironov et al. 2019): each record joins the global batch independently with probability q —
  the same law as Opacus' ``DistributedUniformWithReplacementSampler``, whose per-rank Poisson
  draws union to one Poisson batch. The batch is split across ranks; each rank clips its
  per-sample gradients with Opacus; Opacus' ``DistributedDPOptimizer`` adds N(0, σ²C²) on rank 0
  only, divides by the per-rank expected batch size B/W, all-reduces and divides by W: the update
  is (Σ clip(g_i) + N(0, σ²C²I)) / B, noise added once per step, as in one process.
* ``vmf`` (replace one record, fixed-size batches of b drawn without replacement; the
  replace-one VMF accountant of :mod:`privtool.accounting.vmf`, Balle et al. 2018 amplification):
  the b records are split across ranks; each rank unit-scales its records' gradients and draws
  their VMF samples with its own generator stream (independent across ranks), and the sum over
  ranks is divided by b. The b samples are independent VMF(κ, μ_i) as in one process.
* ``class`` / ``subclass`` (add/remove or replace one unit; :mod:`privtool.accounting.unit`,
  paper 3 Alg. 2): the sampled units are split across ranks whole (a unit's clipped mean needs
  all its records), each rank sums the clipped means of its units, rank 0 alone adds
  N(0, σ²S²I), and the all-reduced sum is divided by qK.
* ``none``: the mean loss gradient over the global batch.

Only rank 0 writes the run, the progress bar and the logs (:mod:`privtool.stages.train`);
every rank checks that it sees the same data, config and calibration (:meth:`Session.check_same`).
A rank that dies makes the others' next collective fail (gloo/NCCL report the closed
connection, or the timeout ``PRIVTOOL_DDP_TIMEOUT`` seconds, default 600, fires): they exit with
a one-line error and the run directory is never committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from privtool.errors import PrivtoolError
from privtool.registry import Registry

TIMEOUT_ENV = "PRIVTOOL_DDP_TIMEOUT"
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Session:
    """Where this process stands: rank ``rank`` of ``world`` (one process: 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False

    @property
    def leader(self) -> bool:
        """Rank 0: the only rank that writes the run, shows progress and logs."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def check_same(self, what: str, obj: Any) -> None:
        """Fail on every rank, naming the ranks, unless all ranks hold the same ``obj``."""
        if not self.active:
            return
        import torch.distributed as dist

        digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
        seen: list[Any] = [None] * self.world
        dist.all_gather_object(seen, digest)
        odd = [r for r, d in enumerate(seen) if d != seen[0]]
        if odd:
            raise PrivtoolError(
                f"distributed training: rank(s) {odd} see a different {what} than "
                f"rank 0; every rank must run the same privtool, params and data"
            )


def reports(distributed: str) -> bool:
    """Whether this process prints results: always, except on torchrun ranks > 0 of a
    ``train.distributed=ddp`` run."""
    return distributed != "ddp" or os.environ.get("RANK", "0") == "0"


def current() -> Session:
    """The session of an initialised ``torch.distributed`` process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise PrivtoolError(
            "train.distributed=ddp needs a process group: launch with "
            "`torchrun --nproc_per_node N -m privtool train ...` (see README)"
        )
    return Session(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        active=True,
    )


def _is_collective_failure(e: BaseException) -> bool:
    import torch.distributed as dist

    text = str(e).lower()
    return isinstance(e, dist.DistError) or any(
        k in text for k in ("gloo", "nccl", "connection", "timed out", "timeout", "peer")
    )


@contextmanager
def ddp_session(distributed: str, device: Any) -> Iterator[tuple[Session, Any]]:
    """Join the process group ``torchrun`` describes (``distributed == "ddp"``) and yield
    (session, device): gloo on CPU, nccl on CUDA (``cuda:LOCAL_RANK``). With ``"none"`` it
    yields a one-process session and ``device`` unchanged. A failed collective (a dead or stuck
    rank) becomes one :class:`PrivtoolError`."""
    if distributed != "ddp":
        yield Session(), device
        return
    import torch
    import torch.distributed as dist

    missing = [k for k in _TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise PrivtoolError(
            f"train.distributed=ddp must run under torchrun ({', '.join(missing)} "
            f"not set): `torchrun --nproc_per_node N -m privtool train ...`"
        )
    try:
        timeout = float(os.environ.get(TIMEOUT_ENV, "600"))
    except ValueError:
        raise PrivtoolError(
            f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r} is not a number of seconds"
        ) from None
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as e:  # DistStoreError (rendezvous timeout) included
        raise PrivtoolError(
            f"rank {os.environ['RANK']} could not join the process group at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} "
            f"({_first_line(e)}); no run was written"
        ) from None
    session = current()
    previous = _stop_on_sigterm()
    try:
        yield session, device
    except PrivtoolError:
        raise
    except Exception as e:
        if not _is_collective_failure(e):
            raise
        raise PrivtoolError(
            f"distributed training failed on rank {session.rank} of "
            f"{session.world}: another rank died, was killed or timed out "
            f"({_first_line(e)}); no run was written"
        ) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        dist.destroy_process_group()


def _first_line(e: BaseException) -> str:
    """The gist of a torch.distributed error; gloo's text starts with "[file.cc:line]", so
    bracketed parts are dropped (they would also be read as rich markup by the CLI)."""
    line = (str(e).strip().splitlines() or [""])[0]
    return " ".join(re.sub(r"\[[^\]]*\]", " ", line).split())[:200] or type(e).__name__


def _stop_on_sigterm() -> Any:
    """torchrun SIGTERMs the surviving ranks when one fails: turn that into an exception, so
    that rank 0's staged run directory is removed on the way out (returns the old handler)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        raise PrivtoolError(
            "stopped by SIGTERM (torchrun stops every rank when one fails); no run was written"
        )

    return signal.signal(signal.SIGTERM, stop)


# --- how each mechanism shares a global batch and combines the ranks' contributions ---------


@dataclass(frozen=True)
class Adapter:
    """``shard(mech, idx, session)`` -> this rank's indices of the global batch ``idx``;
    ``stepper(mech, model, optimizer, generator, session)`` -> a step on the local share whose
    update is the one-process update of the whole batch."""

    shard: Callable[..., np.ndarray]
    stepper: Callable[..., Callable[[Any, Any], tuple[float, int]]]


#: adapters by name; a mechanism names its own in ``Mechanism.ddp_adapter`` (docs/SPEC.md §5)
ADAPTERS: Registry[Adapter] = Registry("distributed adapter")


def shard_records(mech: Any, idx: np.ndarray, s: Session) -> np.ndarray:
    """Records dealt round-robin: sizes differ by at most one."""
    return idx[s.rank :: s.world]


def shard_units(mech: Any, idx: np.ndarray, s: Session) -> np.ndarray:
    """Whole units, largest first to the least-loaded rank (same on every rank); sets the
    mechanism's per-record unit ids to this rank's share."""
    units = mech._batch_units
    ids, counts = np.unique(units, return_counts=True)
    load = np.zeros(s.world, dtype=np.int64)
    mine = []
    for k in np.argsort(-counts, kind="stable"):
        r = int(np.argmin(load))
        load[r] += counts[k]
        if r == s.rank:
            mine.append(ids[k])
    keep = np.isin(units, np.asarray(mine, dtype=units.dtype))
    mech._batch_units = units[keep]
    return idx[keep]


def _opacus_ddp_stepper(step: Any, s: Session, expected_batch_size: int) -> Any:
    """Turn a one-process Opacus stepper (``opacus_stepper``) into Opacus' distributed one:
    the DP optimizer becomes a ``DistributedDPOptimizer`` (rank 0 alone adds the Gaussian
    noise; gradients are all-reduced) and divides by the per-rank expected batch size, as
    ``PrivacyEngine.make_private`` does for a DPDDP module."""
    import torch
    from opacus.optimizers import DistributedDPOptimizer, DPOptimizer

    dp_opt = step.optimizer
    base = type(dp_opt)
    if base is DPOptimizer:
        cls: type = DistributedDPOptimizer
    elif issubclass(base, DPOptimizer) and base.add_noise is not DPOptimizer.add_noise:
        # a mechanism that privatizes per record (vmf): keep it, add Opacus' all-reduce step
        cls = type(f"Distributed{base.__name__}", (base, DistributedDPOptimizer), {})
    else:
        raise PrivtoolError(
            f"train.distributed=ddp does not support the {base.__name__} "
            f"optimizer (train.grad_sample_mode=ghost); use hooks or functorch"
        )
    dp_opt.__class__ = cls
    dp_opt.rank, dp_opt.world_size = s.rank, s.world
    dp_opt.expected_batch_size = expected_batch_size / s.world

    def ddp_step(x: Any, y: Any) -> tuple[float, int]:
        if len(x):
            return step(x, y)
        # an empty share of the global batch: contribute zero (and rank 0's noise) to the sum
        dp_opt.zero_grad(set_to_none=True)
        for p in dp_opt.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        dp_opt.step()
        return float("nan"), 0

    ddp_step.optimizer = dp_opt  # type: ignore[attr-defined]
    return ddp_step


def _gaussian_stepper(mech: Any, model: Any, optimizer: Any, generator: Any, s: Session) -> Any:
    if mech.cfg.grad_sample_mode == "ghost":
        raise PrivtoolError(
            "train.distributed=ddp needs per-sample gradients: set "
            "train.grad_sample_mode=hooks (or functorch), not ghost"
        )
    return _opacus_ddp_stepper(
        mech.make_stepper(model, optimizer, generator), s, mech.schedule.batch_size
    )


def _vmf_stepper(mech: Any, model: Any, optimizer: Any, generator: Any, s: Session) -> Any:
    if mech.schedule.batch_size < s.world:
        raise PrivtoolError(
            f"train.batch_size={mech.schedule.batch_size} is smaller than the "
            f"{s.world} processes; raise it or use fewer processes"
        )
    return _opacus_ddp_stepper(
        mech.make_stepper(model, optimizer, generator), s, mech.schedule.batch_size
    )


def _unit_stepper(mech: Any, model: Any, optimizer: Any, generator: Any, s: Session) -> Any:
    mech.noise_share = 1.0 if s.leader else 0.0
    mech.all_reduce = _all_reduce_sum
    return mech.make_stepper(model, optimizer, generator)


def _plain_stepper(mech: Any, model: Any, optimizer: Any, generator: Any, s: Session) -> Any:
    """Non-private: the gradient of the mean loss over the global batch."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    params = [p for p in model.parameters() if p.requires_grad]

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        optimizer.zero_grad(set_to_none=True)
        n = torch.tensor([float(len(x))], device=x.device)  # nccl reduces device tensors
        dist.all_reduce(n)
        out = model(x)
        loss = F.cross_entropy(out, y, reduction="sum")
        (loss / n.item()).backward()
        _all_reduce_sum(
            [p.grad if p.grad is not None else torch.zeros_like(p) for p in params], params
        )
        optimizer.step()
        return (
            float(loss.detach()) / len(x) if len(x) else float("nan"),
            int((out.detach().argmax(1) == y).sum()),
        )

    return step


def _all_reduce_sum(tensors: list[Any], params: list[Any] | None = None) -> None:
    """Sum ``tensors`` over the ranks in place (one flat all-reduce); with ``params``, store
    the sums as their ``.grad``."""
    import torch
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for i, t in enumerate(tensors):
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
        if params is not None:
            params[i].grad = t


ADAPTERS.add("gaussian", Adapter(shard_records, _gaussian_stepper))
ADAPTERS.add("vmf", Adapter(shard_records, _vmf_stepper))
ADAPTERS.add("units", Adapter(shard_units, _unit_stepper))
ADAPTERS.add("none", Adapter(shard_records, _plain_stepper))


class DistributedMechanism:
    """A mechanism run by one rank of a distributed training; the training loop uses it as it
    uses the mechanism itself (every other attribute is the wrapped mechanism's)."""

    def __init__(self, mech: Any, session: Session | None = None) -> None:
        self._mech = mech
        self._session = session or current()
        if mech.ddp_adapter is None:
            raise PrivtoolError(
                f"mechanism {mech.name!r} does not support train.distributed=ddp "
                f"(it names no privtool.distributed adapter); train it in one process"
            )
        self._adapter = ADAPTERS.get(mech.ddp_adapter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mech, name)

    def prepare(self, x_train: Any, y_train: Any) -> None:
        self._mech.prepare(x_train, y_train)

    def calibrate(self, model: Any) -> None:
        """Start every rank from rank 0's weights (Opacus' DPDDP broadcast), then calibrate
        and check that all ranks found the same noise, units and schedule."""
        from opacus.distributed import (
            DifferentiallyPrivateDistributedDataParallel as DPDDP,
        )

        DPDDP(model)
        self._mech.calibrate(model)
        arrays = {
            k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
            for k, v in self._mech.artifacts().items()
        }  # e.g. units.npy
        self._session.check_same(
            "calibration (σ/κ, units, batch size)", {**self._mech.settings(), **arrays}
        )

    def batches(self, epoch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """This rank's share of each global batch; the global batches are rank 0's."""
        import torch.distributed as dist

        state = [rng.bit_generator.state]
        dist.broadcast_object_list(state, src=0)
        rng.bit_generator.state = state[0]
        for idx in self._mech.batches(epoch, rng):
            yield self._adapter.shard(self._mech, idx, self._session)

    def make_stepper(self, model: Any, optimizer: Any, generator: Any) -> Any:
        """Ranks > 0 get their own noise stream (VMF samples must be independent across
        ranks), derived from this rank's generator seed and the rank."""
        s = self._session
        if s.rank:
            seed = np.random.SeedSequence([generator.initial_seed(), s.rank])
            generator.manual_seed(int(seed.generate_state(1, np.uint64)[0] >> 1))
        return self._adapter.stepper(self._mech, model, optimizer, generator, s)


def distribute(mech: Any) -> DistributedMechanism:
    """Wrap ``mech`` for the current process group (``train.distributed=ddp``)."""
    return DistributedMechanism(mech)
