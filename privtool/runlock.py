"""Crash-safe, single-writer replacement of a run folder (``--out``).

:func:`privtool.artifacts.staged_dir` builds a stage's output in ``.OUT.PID.XXXX.partial``
beside ``OUT`` and, when it is complete, swaps it in. This module holds the three pieces
that make that safe against concurrent writers and against processes killed at any point:

* :func:`out_lock` — an exclusive ``flock`` on ``.OUT.lock`` beside ``OUT`` for the whole
  stage. A second writer to the same ``OUT`` fails at once with one line naming the holder's
  pid. The kernel drops the lock when its holder dies (even by SIGKILL), so a crash never
  leaves a stale lock; the holder unlinks the lock file before releasing it, and a process
  that locked a file which was unlinked meanwhile retries on the new one.
* :func:`swap_into` — ``renameat2(RENAME_EXCHANGE)`` exchanges the finished folder and the
  old run in one atomic step (Linux ≥ 3.15 on ext4, xfs, btrfs, tmpfs, ...), so ``OUT``
  holds the old run or the new one at every instant; the old run, now at the temporary
  name, is deleted afterwards. Where the exchange is unavailable (other systems or file
  systems) the fallback renames the old run aside to ``.OUT.old-PID`` and the new one into
  place: between those two renames ``OUT`` is briefly absent, but the old run is never
  lost — :func:`clean_stale` moves it back if the process died in that window.
* :func:`clean_stale` — run under the lock, it deletes partial folders and set-aside old
  runs of processes that are gone (SIGKILL, power loss), restoring an old run first when
  ``OUT`` itself is missing.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from privtool.errors import PrivtoolError

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (non-blocking: a held lock is an error)."""
    path = lock_path(out)
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise PrivtoolError(
                f"cannot write {out}: {(e.strerror or str(e)).lower()}; choose a writable --out"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise PrivtoolError(
                f"{out} is being written by another privtool process"
                f"{f' (pid {holder})' if holder else ''}; wait for it to "
                f"finish or choose another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder unlinked this file while we waited for it: retry
    else:  # pragma: no cover - needs 20 lost races in a row
        raise PrivtoolError(f"could not lock {out}; try again")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)  # releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out: Path) -> list[Path]:
    """Remove ``.OUT.PID.*.partial`` and ``.OUT.old-PID`` of dead processes (call it with
    :func:`out_lock` held); an old run set aside by a process that died before moving the
    new one in is first moved back to ``out``. Returns what was removed."""
    removed: list[Path] = []
    partial = re.compile(rf"^\.{re.escape(out.name)}\.(\d+)\.[^.]+\.partial$")
    legacy = re.compile(rf"^\.{re.escape(out.name)}\.[^.]+\.partial$")  # before the pid was named
    old = re.compile(rf"^\.{re.escape(out.name)}\.old-(\d+)$")
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for p in sorted(entries):
        m = partial.match(p.name) or old.match(p.name)
        if m is not None and _alive(int(m.group(1))):
            continue
        if m is None and not legacy.match(p.name):
            continue
        if old.match(p.name) and not out.exists():
            os.replace(p, out)  # the crash came between the fallback's two renames
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange ``a`` and ``b`` (renameat2 RENAME_EXCHANGE); False where the
    system or file system does not offer it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM while the swap runs, so it is never cut between its steps."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def swap_into(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out``; the old run (if any) is deleted after.
    ``out`` holds the old or the new run at every instant where RENAME_EXCHANGE exists."""
    with _signals_held():
        _fsync_dir(tmp)
        if not out.exists():
            os.rename(tmp, out)
        elif _exchange(tmp, out):
            pass  # tmp now holds the old run
        else:
            aside = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, aside)
            os.rename(tmp, out)
            os.rename(aside, tmp)
        _fsync_dir(out.parent)
    shutil.rmtree(tmp, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)
