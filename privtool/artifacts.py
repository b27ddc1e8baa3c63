"""Run directories: atomic writes, meta.json, and checked loading of earlier stages' output.

A stage builds its whole output in a temporary sibling directory and renames it into place
at the end, so an interrupted stage never leaves a half-written run that a later stage would
accept, and the previous run stays intact until the new one is complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from privtool.errors import PrivtoolError

META = "meta.json"
METRICS = "metrics.json"
MODEL = "model.pt"
ACCOUNTANT = "accountant.json"
SPLITS = "splits.npz"


def _clean(obj: Any) -> Any:
    """Make ``obj`` strict-JSON: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any) -> str:
    """Strict JSON (no NaN/Infinity), sorted keys, trailing newline."""
    return json.dumps(_clean(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, dumps(obj).encode())


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def staged_dir(out: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; on success it replaces ``out`` whole.

    On any exception the temporary directory is removed and ``out`` is left as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not out.is_dir():
        raise PrivtoolError(f"--out {out} exists and is not a directory; choose another path")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary directory removed on exit: where a non-writing rank of a distributed
    training puts what rank 0 alone keeps."""
    tmp = Path(tempfile.mkdtemp(prefix="privtool-scratch-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def versions() -> dict[str, str]:
    import privtool

    out = {"privtool": privtool.__version__, "python": platform.python_version()}
    for mod in ("torch", "opacus", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover - optional
            pass
    return out


def read_json(path: Path, *, what: str, remedy: str) -> dict[str, Any]:
    if not path.is_file():
        raise PrivtoolError(f"{path} is missing; {remedy}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PrivtoolError(f"{path} is corrupt (not valid JSON); {remedy}") from None
    if not isinstance(obj, dict):
        raise PrivtoolError(f"{path} is not a {what} object; {remedy}")
    return obj


def parse_target(target: str | Path) -> tuple[Path, int | None]:
    """``RUN_DIR`` or ``RUN_DIR@EPOCH`` -> (run dir, epoch or None)."""
    text = str(target)
    if "@" in Path(text).name:
        base, _, epoch = text.rpartition("@")
        if not epoch.isdigit():
            raise PrivtoolError(f"--target {text!r}: the part after @ must be an epoch number")
        return Path(base), int(epoch)
    return Path(text), None


def load_run(run_dir: str | Path, *, stage: str = "train") -> dict[str, Any]:
    """Check a run directory written by ``privtool <stage>`` and return its meta + metrics.

    Raises one clear :class:`PrivtoolError` for a missing directory, a wrong stage, corrupt
    JSON, or a payload whose content hash does not match meta.json.
    """
    run = Path(run_dir)
    remedy = f"make it with `privtool {stage} --out {run}`"
    if not run.is_dir():
        raise PrivtoolError(f"run {run} does not exist; {remedy}")
    meta = read_json(run / META, what="meta", remedy=remedy)
    if meta.get("stage") != stage:
        raise PrivtoolError(f"{run} was written by stage {meta.get('stage')!r}, not {stage!r}; "
                            f"{remedy}")
    metrics = read_json(run / METRICS, what="metrics", remedy=remedy)
    for name, digest in (meta.get("outputs") or {}).items():
        f = run / name
        if not f.is_file():
            raise PrivtoolError(f"{f} is missing; {remedy}")
        if file_hash(f) != digest:
            raise PrivtoolError(f"{f} does not match the hash in {run / META} (truncated or "
                                f"modified); {remedy}")
    return {"dir": run, "meta": meta, "metrics": metrics}


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a corrupt file is a one-line error."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PrivtoolError(f"checkpoint {path} is missing; re-run `privtool train`") from None
    except Exception as e:  # torch raises several types for truncated/corrupt zips
        raise PrivtoolError(f"checkpoint {path} is corrupt ({type(e).__name__}); re-run "
                            f"`privtool train` to rewrite it") from None
