"""Find every run and attack result under a folder and link each attack to the run it attacked.

A directory is recognised by its ``meta.json: stage`` (``train``, ``select``, ``attack``), not by
its name or place; an attack is linked to its target through ``meta.json: inputs.target``
(the target's ``meta_sha256`` first, then its recorded path), so folders can be renamed or
moved together. Model stores (``store.json``), hidden folders (a stage's ``.partial`` staging
dirs) and directories of other stages (``calibrate``) are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from privtool import results
from privtool.artifacts import META, METRICS, file_hash, read_json, verify_outputs
from privtool.errors import PrivtoolError

RUN_STAGES = ("train", "select")


@dataclass(frozen=True)
class Artifact:
    """One stage directory: its meta.json and metrics.json, and the hash that names it."""

    dir: Path
    stage: str
    meta: dict[str, Any]
    metrics: dict[str, Any]
    meta_sha256: str

    @property
    def params(self) -> dict[str, Any]:
        return self.meta.get("params") or {}

    def verified(self, name: str) -> Path | None:
        """``dir/name`` if it exists, after checking it against meta.json's hash (if listed)."""
        path = self.dir / name
        if not path.is_file():
            return None
        digest = (self.meta.get("outputs") or {}).get(name)
        if digest is not None and file_hash(path) != digest:
            raise PrivtoolError(
                f"{path} does not match the hash in {self.dir / META} (truncated "
                f"or modified); re-run `privtool {self.stage} --out {self.dir}`"
            )
        return path


@dataclass(frozen=True)
class AttackDir(Artifact):
    """An attack (or audit) directory and the target it names (``RUN_DIR`` or
    ``RUN_DIR@EPOCH``); an attack's numbers are its :attr:`result`."""

    name: str = ""
    kind: str = ""
    target_dir: str = ""
    target_epoch: int | None = None
    target_meta_sha256: str | None = None

    @cached_property
    def result(self) -> results.AttackResult:
        """The attack's metrics.json as the result object of its kind
        (:func:`privtool.results.from_json`); audits have none."""
        return results.from_json(self.metrics)


@dataclass
class Collection:
    """Everything found under ``root``; ``curves`` are select accuracy-vs-labels folders
    (many runs in one, listed but not tabulated)."""

    root: Path
    runs: list[Artifact] = field(default_factory=list)
    attacks: list[AttackDir] = field(default_factory=list)
    curves: list[Artifact] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: canary audits (``privtool audit``), linked to their run like attacks
    audits: list[AttackDir] = field(default_factory=list)

    def sources(self) -> list[Artifact]:
        return [*self.runs, *self.attacks, *self.curves, *self.audits]


def stage_dirs(root: Path) -> Iterator[Path]:
    """Directories under ``root`` (itself included) holding a meta.json; not below one."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "store.json" in filenames:
            dirnames[:] = []
        elif META in filenames:
            # below a run only its audits (privtool audit's default RUN/audit)
            dirnames[:] = [d for d in dirnames if d.startswith("audit")]
            yield Path(dirpath)


def load_artifact(path: Path) -> Artifact | None:
    """The stage directory at ``path``, or None for a stage calibration does not read."""
    meta = read_json(
        path / META, what="meta", remedy=f"re-run the stage that wrote {path} or delete it"
    )
    stage = meta.get("stage")
    if stage not in (*RUN_STAGES, "attack", "audit"):
        return None
    remedy = f"re-run `privtool {stage} --out {path}` or delete it"
    verify_outputs(path, meta, remedy, only_required=True)  # the rest: Artifact.verified
    metrics = read_json(path / METRICS, what="metrics", remedy=remedy)
    base = dict(
        dir=path, stage=stage, meta=meta, metrics=metrics, meta_sha256=file_hash(path / META)
    )
    if stage not in ("attack", "audit"):
        return Artifact(**base)
    target = (meta.get("inputs") or {}).get("target") or {}
    name = (
        "audit"
        if stage == "audit"
        else ((meta.get("params") or {}).get("attack") or {}).get("name") or metrics.get("attack")
    )
    if not name or not target.get("dir"):
        raise PrivtoolError(
            f"{path / META} names no attack or no target (inputs.target.dir); {remedy}"
        )
    return AttackDir(
        **base,
        name=str(name),
        kind=str(metrics.get("kind", stage)),
        target_dir=str(target["dir"]),
        target_epoch=target.get("epoch"),
        target_meta_sha256=target.get("meta_sha256"),
    )


def collect(root: str | Path) -> Collection:
    """Every train/select run and attack result under ``root``.

    Raises a one-line :class:`PrivtoolError` when ``root`` is missing or holds none.
    """
    from privtool.calibrate.scores import SCORES

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise PrivtoolError(
            f"--runs {root} is a file, not a folder; point it at the folder "
            f"holding train and attack directories (e.g. runs/)"
        )
    if not root.is_dir():
        raise PrivtoolError(
            f"--runs {root} does not exist; point it at the folder holding "
            f"train and attack directories (e.g. runs/, made by `privtool train "
            f"--out runs/train/NAME` and `privtool attack`)"
        )
    col = Collection(root=root)
    for path in stage_dirs(root):
        art = load_artifact(path)
        if art is None:
            continue
        if art.stage == "audit":
            col.audits.append(art)
        elif isinstance(art, AttackDir):
            if art.kind not in SCORES:
                col.warnings.append(
                    f"{path}: attack kind {art.kind!r} has no calibration "
                    f"scores (known: {', '.join(SCORES)}); skipped"
                )
                continue
            col.attacks.append(art)
        elif art.meta.get("mode") == "curve":
            col.curves.append(art)
        else:
            col.runs.append(art)
    if not col.runs and not col.attacks:
        raise PrivtoolError(
            f"{root} holds no run or attack folders (no meta.json written by "
            f"privtool train, select or attack below it); make some with "
            f"`privtool train --out {root}/train/NAME` and `privtool attack "
            f"--target {root}/train/NAME`"
        )
    return col
