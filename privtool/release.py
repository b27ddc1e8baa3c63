"""What a run releases and what its ε covers: secret noise, release vs diagnostics, export.

A DP guarantee (ε, δ) is a statement about the distribution of the *released* output given
the private training set D, over the mechanism's own randomness (the Gaussian/VMF noise and
the batch sampling). It says nothing about

* outputs whose randomness the adversary can recompute: with the noise and sampling
  generators seeded from a published seed, retraining on D and on a neighbour D' with that seed
  tells them apart exactly (the output is a deterministic function of the data), so the run has
  no DP at all. ``train.noise_seed: secret`` (the default) therefore seeds both generators from
  ``os.urandom`` and never writes the seed; ``from-seed`` keeps the reproducible seeds
  (``train.seed + 2`` for the noise, ``+ 1`` for the sampling) for research simulations and
  labels the run :data:`NOISE_REPRODUCIBLE`. Model initialisation and the data split stay
  seeded either way (they do not depend on D, so publishing them costs nothing);
* statistics computed on D without noise (train loss/accuracy, train–test gap, unit sizes,
  each record's cluster id, the number of private voters): these are *diagnostics*, outside
  ε. :func:`split_metrics` classes every metrics field and :func:`export_run` copies only the
  release part of a run directory.

Assumed public, as Opacus and the accountants assume: the training set size n (the sampling
rate b/n is part of every accountant's input), the number of units K (the qK divisor of
class/subclass DP) and every hyperparameter.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from privtool.errors import PrivtoolError

NOISE_SECRET = "secret — noise and batch sampling drawn from the OS (os.urandom), never recorded"
NOISE_REPRODUCIBLE = "reproducible — ε holds only if the seed stays secret"
NOISE_NONE = "none — no noise, not private"

#: metrics fields computed on the private training data without noise (outside ε)
DIAGNOSTIC_KEYS = frozenset(
    {
        "train_loss",
        "train_accuracy",
        "train_gap",
        "largest_unit",
        "n_private_voters",
        "eval_train_accuracy",
        "eval_train_loss",
    }
)
#: what `privtool export` copies as is: the weights (covered by ε); accountant.json and
#: metrics.json are copied without diagnostic fields; everything else is left out
RELEASE_FILES = ("model.pt",)
RELEASE_DIRS = ("checkpoints",)
#: release fields `privtool export` still leaves out (bookkeeping)
NOT_EXPORTED = frozenset({"seed"})


def noise_label(cfg: Any) -> str:
    """The ``noise`` field of a run: how its noise and sampling randomness was drawn."""
    if not _is_private(cfg.mech):
        return NOISE_NONE
    return NOISE_SECRET if cfg.noise_seed == "secret" else NOISE_REPRODUCIBLE


def _is_private(mech: str) -> bool:
    """``Mechanism.is_private`` of a registered mechanism (a non-private one has nothing to
    hide: its randomness comes from the seed)."""
    from privtool.mechanisms import MECHANISMS

    return MECHANISMS.get(mech).is_private


def secret_seed(bits: int = 64) -> int:
    """A seed read from the OS entropy source; callers must never record it."""
    return int.from_bytes(os.urandom(bits // 8), "little")


def noise_generators(cfg: Any, device: Any) -> tuple[Any, np.random.Generator]:
    """(torch generator of the DP noise, numpy generator of the batch sampling) for ``cfg``.

    ``from-seed`` (and the non-private ``none``, which has nothing to hide): seeded with
    ``cfg.seed + 2`` / ``cfg.seed + 1`` exactly as before, so such runs are bit-identical.
    ``secret``: 64 (torch) and 128 (numpy) bits from ``os.urandom``. The generators are torch's
    and numpy's ordinary PRNGs (not a CSPRNG such as Opacus' ``secure_mode``, whose
    torchcsprng does not build for current torch): an adversary would have to find the seed
    among 2^64 candidates by retraining, and no output exposes raw generator draws. Opacus'
    floating-point hardening of the Gaussian sampler is not applied either.
    """
    import torch

    gen = torch.Generator(device=device)
    if cfg.noise_seed == "from-seed" or not _is_private(cfg.mech):
        gen.manual_seed(cfg.seed + 2)
        return gen, np.random.default_rng(cfg.seed + 1)
    gen.manual_seed(secret_seed(64))
    return gen, secret_numpy_rng()


def secret_numpy_rng() -> np.random.Generator:
    """A numpy generator seeded with 128 bits from ``os.urandom`` (seed not kept)."""
    return np.random.default_rng(np.random.SeedSequence(secret_seed(128)))


def is_diagnostic(key: str) -> bool:
    return key in DIAGNOSTIC_KEYS


def _split_entry(entry: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    rel = {k: v for k, v in entry.items() if not is_diagnostic(k)}
    diag = {k: v for k, v in entry.items() if is_diagnostic(k)}
    return rel, diag


def split_metrics(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"release": …, "diagnostics": …}`` of a run's flat metrics.

    Diagnostics are the :data:`DIAGNOSTIC_KEYS` (top level and in each ``checkpoints`` entry,
    where the entry's epoch is kept beside them); everything else — ε/δ fields, the noise and
    sampling settings, test-split scores, identities — is release. The test split is not
    covered by ε either: it is treated as evaluation data whose owner accepts publishing
    its aggregate accuracy, as papers do.
    """
    release: dict[str, Any] = {}
    diagnostics: dict[str, Any] = {}
    for k, v in metrics.items():
        if k in ("release", "diagnostics"):
            continue
        if k == "checkpoints" and isinstance(v, list):
            pairs = [_split_entry(c) for c in v]
            release[k] = [r for r, _ in pairs]
            diagnostics[k] = [{"epoch": r.get("epoch"), **d} for r, d in pairs if d]
        elif is_diagnostic(k):
            diagnostics[k] = v
        else:
            release[k] = v
    diagnostics["note"] = (
        "computed on the private training data without noise: not covered "
        "by epsilon, not private; `privtool export` leaves them out"
    )
    return {"release": release, "diagnostics": diagnostics}


def with_split(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` plus its ``release`` / ``diagnostics`` split (the flat fields stay, so
    readers of earlier metrics.json keep working)."""
    return {**metrics, **split_metrics(metrics)}


def release_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Only the release fields of a metrics.json (its ``release`` part, or split anew)."""
    rel = metrics.get("release")
    return dict(rel) if isinstance(rel, Mapping) else split_metrics(metrics)["release"]


def export_run(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Copy the release part of a train or select run to ``out`` for sharing.

    Copies the weights (``model.pt``, ``checkpoints/``), ``accountant.json`` without
    diagnostic fields and a ``metrics.json`` holding only release fields, and writes a
    ``meta.json`` naming what was left out. The run is verified (meta.json hashes) first; the
    folder is written whole or not at all. Returns a summary.
    """
    from privtool.artifacts import (
        ACCOUNTANT,
        META,
        METRICS,
        dumps,
        load_run,
        read_json,
        staged_dir,
    )

    run, out = Path(run_dir), Path(out)
    remedy = "pass a directory written by `privtool train` or `privtool select`"
    if not run.is_dir():
        raise PrivtoolError(f"run {run} does not exist; {remedy}")
    stage = read_json(run / META, what="meta", remedy=remedy).get("stage")
    if stage not in ("train", "select"):
        raise PrivtoolError(f"{run} was written by stage {stage!r}; {remedy}")
    metrics = load_run(run, stage=stage)["metrics"]  # verifies every hash
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise PrivtoolError(f"--out {out} is inside the run {run}; choose a folder outside it")
    noise = metrics.get("noise")
    copied: list[str] = []
    with staged_dir(out) as tmp:
        for name in RELEASE_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, tmp / name)
                copied.append(name)
        for d in RELEASE_DIRS:
            if (run / d).is_dir():
                shutil.copytree(run / d, tmp / d)
                copied += sorted(
                    p.relative_to(tmp).as_posix() for p in (tmp / d).rglob("*") if p.is_file()
                )
        if (run / ACCOUNTANT).is_file():
            acc = read_json(run / ACCOUNTANT, what="accountant", remedy="re-run the stage")
            (tmp / ACCOUNTANT).write_text(
                dumps({k: v for k, v in acc.items() if not is_diagnostic(k)})
            )
            copied.append(ACCOUNTANT)
        # the seed is bookkeeping; for a from-seed run it is what must stay secret
        (tmp / METRICS).write_text(
            dumps({k: v for k, v in release_metrics(metrics).items() if k not in NOT_EXPORTED})
        )
        copied.append(METRICS)
        present = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
        left_out = sorted(present - set(copied) - {META})
        diag_fields = sorted(k for k in metrics if is_diagnostic(k) or k in NOT_EXPORTED)
        record = {
            "stage": "export",
            "source_stage": stage,
            "source": str(run),
            "noise": noise,
            "files": sorted(copied),
            "left_out_files": left_out,
            "left_out_metrics": diag_fields
            + (
                ["checkpoints[].train_*"]
                if any(is_diagnostic(k) for c in metrics.get("checkpoints") or [] for k in c)
                else []
            ),
            "why": "left-out files and fields are diagnostics computed on the private "
            "data without noise, or bookkeeping (splits, params, seeds); only "
            "the weights and the ε fields are covered by epsilon",
        }
        if noise == NOISE_REPRODUCIBLE:
            record["warning"] = (
                "this run's noise came from its seed (train.noise_seed="
                "from-seed): the export leaves the seed out, but ε holds only "
                f"while it stays secret (it is in {run}); retrain with "
                "train.noise_seed=secret to share"
            )
        (tmp / META).write_text(dumps(record))
    return {
        "out": str(out),
        "files": sorted(copied),
        "left_out_files": left_out,
        "left_out_metrics": record["left_out_metrics"],
        "noise": noise,
        **({"warning": record["warning"]} if "warning" in record else {}),
    }
