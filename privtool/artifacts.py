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
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

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


def _unwritable(path: Path, e: OSError) -> PrivtoolError:
    """An OSError while creating ``path`` (or its folders) -> one line naming it."""
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return PrivtoolError(
                f"cannot write {path}: {blocker} is a file, not a folder; choose another --out"
            )
    reason = e.strerror or type(e).__name__
    return PrivtoolError(f"cannot write {path}: {reason.lower()}; choose a writable --out")


def check_out(out: str | Path | None) -> None:
    """Refuse, before any work, an ``--out`` that cannot be written: a file on its way (or at
    it), or an unwritable nearest existing folder. Creates nothing."""
    if out is None:
        return
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PrivtoolError(f"--out {out} exists and is not a directory; choose another path")
    for p in out.parents:
        if p.exists():
            if not p.is_dir():
                raise PrivtoolError(
                    f"cannot write {out}: {p} is a file, not a folder; choose another --out"
                )
            if not os.access(p, os.W_OK | os.X_OK):
                raise PrivtoolError(
                    f"cannot write {out}: {p} is not writable; choose a writable --out"
                )
            return


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(folder, e) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename (readers see the
    old file or the new one, never a part); an unwritable place is a one-line error."""
    path = Path(path)
    _mkdir(path.parent)
    if path.is_dir():
        raise PrivtoolError(f"cannot write {path}: it is a folder; choose another --out")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _unwritable(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _unwritable(path, e) from None
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

    Concurrency and crash safety (:mod:`privtool.runlock`): a lock on ``out`` is held
    throughout, so a second writer to the same ``out`` fails in one line instead of racing;
    partial folders left by dead processes (SIGKILL, power loss) are removed first; the swap
    leaves the old or the new run at ``out`` at every instant. On any exception (SIGINT and,
    through the CLI, SIGTERM included) the temporary directory is removed and ``out`` is left
    as it was.
    """
    out = Path(out)
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # deepest first
    _mkdir(out.parent)
    if out.exists() and not out.is_dir():
        raise PrivtoolError(f"--out {out} exists and is not a directory; choose another path")
    try:
        with _locked_stage(out) as tmp:
            yield tmp
    except BaseException:
        for p in made:  # folders made for --out go too: a failed stage leaves nothing new
            try:
                p.rmdir()
            except OSError:
                break
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


@contextmanager
def _locked_stage(out: Path) -> Iterator[Path]:
    from privtool.runlock import clean_stale, out_lock, swap_into

    with out_lock(out):
        clean_stale(out)
        # The name is fixed before the folder exists and the folder is made inside the
        # try, so an interrupt (SIGINT, SIGTERM through the CLI) at any instant — even
        # between the mkdir and the next statement — finds the clean-up armed. The pid in
        # the name cannot collide with a live process; a dead one's partial was removed by
        # clean_stale above. mkdir's mode honours the user's umask.
        tmp = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
        try:
            try:
                tmp.mkdir(mode=0o777)
            except OSError as e:
                raise _unwritable(out, e) from None
            yield tmp
            swap_into(tmp, out)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and _names(e, tmp, out):
                raise _unwritable(out, e) from None
            raise


def _names(e: OSError, *paths: Path) -> bool:
    """Whether ``e`` is about one of ``paths`` or something inside them."""
    for name in (e.filename, e.filename2):
        if name is not None and any(
            str(name) == str(p) or str(name).startswith(f"{p}{os.sep}") for p in paths
        ):
            return True
    return False


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    if run.exists() and not run.is_dir():
        raise PrivtoolError(
            f"{run} is a file, not a run folder; pass the folder `privtool {stage} --out` wrote"
        )
    if not run.is_dir():
        raise PrivtoolError(f"run {run} does not exist; {remedy}")
    meta = read_json(run / META, what="meta", remedy=remedy)
    if meta.get("stage") != stage:
        raise PrivtoolError(
            f"{run} was written by stage {meta.get('stage')!r}, not {stage!r}; "
            f"pass a folder written by `privtool {stage}` (keep {run} as it is)"
        )
    verify_outputs(run, meta, remedy)
    metrics = read_json(run / METRICS, what="metrics", remedy=remedy)
    return {"dir": run, "meta": meta, "metrics": metrics}


def verify_outputs(
    run: Path,
    meta: dict[str, Any],
    remedy: str,
    required: tuple[str, ...] = (METRICS,),
    *,
    only_required: bool = False,
) -> None:
    """Check every file ``meta.json: outputs`` lists (or, ``only_required``, just the
    ``required`` ones) against its SHA-256; the ``required`` files (those a later stage reads
    whatever else it does) must be listed. One-line error naming the file."""
    outputs = meta.get("outputs")
    if not isinstance(outputs, dict):
        raise PrivtoolError(f"{run / META} lists no output hashes; {remedy}")
    for name in required:
        if name not in outputs:
            raise PrivtoolError(
                f"{run / name} is not covered by the hashes in {run / META} "
                f"(written by an older privtool, or edited); {remedy}"
            )
    for name, digest in outputs.items():
        if only_required and name not in required:
            continue
        f = inside(run, name)
        if not f.is_file():
            raise PrivtoolError(f"{f} is missing; {remedy}")
        if file_hash(f) != digest:
            raise PrivtoolError(
                f"{f} does not match the hash in {run / META} (truncated or modified); {remedy}"
            )


def inside(run: Path, name: Any) -> Path:
    """``run/name`` for a relative ``name`` that stays inside ``run`` (no absolute paths, no
    ``..``, no symlink leading out); anything else is a one-line error naming it."""
    if (
        not isinstance(name, str)
        or not name
        or Path(name).is_absolute()
        or ".." in Path(name).parts
    ):
        raise PrivtoolError(
            f"{run / META}: file {name!r} is not a path inside the run; the run "
            f"was edited, re-run the stage that wrote {run}"
        )
    path = run / name
    root = os.path.realpath(run)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise PrivtoolError(
            f"{path} leads outside {run}; the run was edited, re-run the stage that wrote {run}"
        )
    return path


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a corrupt file is a one-line error."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PrivtoolError(f"checkpoint {path} is missing; re-run `privtool train`") from None
    except Exception as e:  # torch raises several types for truncated/corrupt zips
        raise PrivtoolError(
            f"checkpoint {path} is corrupt ({type(e).__name__}); re-run "
            f"`privtool train` to rewrite it"
        ) from None


def write_csv(path: Path, rows: list[Mapping[str, Any]]) -> None:
    """``rows`` as a CSV with the union of their keys as columns (None written empty)."""
    import csv
    import io

    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    path.write_text(buf.getvalue())
