"""Issue 17 items 11–13: run integrity, crash safety and concurrency, with real files and
real processes (tests/run_writer.py is a tiny stage on the same artifacts API)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privtool.artifacts import load_run, staged_dir, write_json
from privtool.errors import PrivtoolError
from privtool.runlock import clean_stale, out_lock, swap_into

WRITER = Path(__file__).with_name("run_writer.py")
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def writer(out: Path, tag: str, hold: float = 0.2) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(out), tag, str(hold)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def wait_for_partial(out: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if any(p.name.endswith(".partial") for p in out.parent.iterdir()):
            return
        time.sleep(0.01)
    raise AssertionError(f"no partial folder appeared (exit {proc.poll()})")


def test_kill_9_at_random_points_leaves_the_previous_run_loadable(tmp_path):
    out = tmp_path / "run"
    first = writer(out, "v0", 0.05)
    assert first.wait(60) == 0, first.stderr.read()
    rng = random.Random(0)
    seen = {"v0"}
    for i in range(1, 9):
        proc = writer(out, f"v{i}", 0.3)
        wait_for_partial(out, proc)
        time.sleep(rng.uniform(0, 0.4))  # anywhere in the writing, the swap or the clean-up
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        run = load_run(out)  # never missing, never half-written
        tag = run["metrics"]["tag"]
        assert tag in seen | {f"v{i}"}
        seen.add(tag)
    last = writer(out, "final", 0.01)
    assert last.wait(60) == 0, last.stderr.read()
    assert load_run(out)["metrics"]["tag"] == "final"
    assert leftovers(out) == []  # partials of the killed writers were cleaned up


def test_swap_never_leaves_out_missing(tmp_path):
    """A reader polling OUT while runs are swapped in never finds it absent (the old code
    renamed OUT aside, then the new run in: a window with no OUT at all)."""
    out = tmp_path / "run"
    with staged_dir(out) as tmp:
        write_json(tmp / "metrics.json", {"v": -1})
    code = (
        "import sys; from pathlib import Path; from privtool.artifacts import staged_dir, "
        "write_json\nfor i in range(300):\n    with staged_dir(Path(sys.argv[1])) as t:\n"
        "        write_json(t / 'metrics.json', {'v': i})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], env=ENV)
    missing = checks = 0
    while proc.poll() is None:
        checks += 1
        if not (out / "metrics.json").is_file():
            missing += 1
    assert proc.wait() == 0
    assert checks > 100 and missing == 0
    assert json.loads((out / "metrics.json").read_text()) == {"v": 299}


def test_two_concurrent_writers_one_fails_in_one_line(tmp_path):
    out = tmp_path / "run"
    a = writer(out, "a", 3.0)
    wait_for_partial(out, a)
    b = writer(out, "b", 0.0)
    b_err = b.communicate(timeout=60)[1]
    assert b.returncode == 1
    assert len(b_err.strip().splitlines()) == 1 and "Traceback" not in b_err
    assert "being written by another privtool process" in b_err and f"pid {a.pid}" in b_err
    assert a.wait(60) == 0
    assert load_run(out)["metrics"]["tag"] == "a"
    assert leftovers(out) == []


def test_lock_in_process_refuses_a_second_holder(tmp_path):
    out = tmp_path / "run"
    with out_lock(out):
        with (
            pytest.raises(PrivtoolError, match="being written by another privtool process"),
            out_lock(out),
        ):
            pass
    with out_lock(out):  # released (and its file removed) after the first
        pass
    assert list(tmp_path.iterdir()) == []


def test_sigterm_is_handled_like_sigint_no_partial_left(tmp_path):
    out = tmp_path / "run"
    first = writer(out, "old", 0.01)
    assert first.wait(60) == 0
    proc = writer(out, "new", 5.0)
    wait_for_partial(out, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted; nothing was written" in err
    assert "Traceback" not in err
    assert load_run(out)["metrics"]["tag"] == "old"
    assert leftovers(out) == []


@pytest.mark.slow  # the real command: ~15 s of imports and data loading on a busy machine
def test_sigterm_real_train_cli_leaves_no_partial(tmp_path):
    """The real command (DVC and CI send SIGTERM): no .partial, no lock, no run."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "privtool",
            "train",
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--epochs",
            "50",
            "--mech",
            "none",
            "--out",
            str(out),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_partial(out, proc, timeout=240)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; nothing was written" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_stale_partials_of_dead_processes_are_cleaned_live_ones_kept(tmp_path):
    out = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".run.{dead.pid}.abcd.partial"
    live = tmp_path / f".run.{os.getpid()}.efgh.partial"
    legacy = tmp_path / ".run.xyz123.partial"  # written before partials named their pid
    other = tmp_path / ".other.1.abcd.partial"
    for p in (stale, live, legacy, other):
        (p / "checkpoints").mkdir(parents=True)
    with out_lock(out):
        removed = clean_stale(out)
    assert sorted(removed) == sorted([stale, legacy])
    assert live.exists() and other.exists() and not stale.exists()


def test_old_run_set_aside_by_a_dead_fallback_swap_is_restored(tmp_path):
    out = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = tmp_path / f".run.old-{dead.pid}"
    aside.mkdir()
    (aside / "metrics.json").write_text("{}")
    with out_lock(out):
        clean_stale(out)
    assert (out / "metrics.json").is_file() and not aside.exists()


def test_swap_fallback_without_rename_exchange(tmp_path, monkeypatch):
    import privtool.runlock as rl

    monkeypatch.setattr(rl, "_exchange", lambda a, b: False)
    out = tmp_path / "run"
    for v in (1, 2):
        tmp = tmp_path / f".run.{os.getpid()}.x{v}.partial"
        tmp.mkdir()
        (tmp / "v").write_text(str(v))
        swap_into(tmp, out)
    assert (out / "v").read_text() == "2" and [p.name for p in tmp_path.iterdir()] == ["run"]


# ------------------------------------------------------------- unwritable --out (item 9)


def _immutable(path: Path) -> bool:
    """chattr +i: unwritable even for root (the tests may run as root)."""
    if shutil.which("chattr") is None:
        return False
    return (
        subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True).returncode
        == 0
    )


@pytest.mark.parametrize("make", ["under_a_file", "unwritable_parent"])
def test_unwritable_out_is_one_line_error(tmp_path, make):
    from privtool.artifacts import atomic_write_bytes

    parent = tmp_path / ("afile" if make == "under_a_file" else "locked")
    if make == "under_a_file":
        parent.write_text("x")
    else:
        parent.mkdir()
        if os.geteuid() != 0:
            parent.chmod(0o500)
        elif not _immutable(parent):
            pytest.skip("root without chattr: no unwritable folder to test with")
    try:
        for out in (parent / "run", parent / "deeper" / "run"):
            with pytest.raises(PrivtoolError, match="cannot write") as e, staged_dir(out) as tmp:
                write_json(tmp / "metrics.json", {})
            assert "\n" not in str(e.value)
            if make == "under_a_file":
                assert "is a file, not a folder" in str(e.value)
            with pytest.raises(PrivtoolError, match="cannot write"):
                atomic_write_bytes(out / "report.html", b"x")
    finally:
        if make == "unwritable_parent":
            subprocess.run(["chattr", "-i", str(parent)], check=False, capture_output=True)
            parent.chmod(0o700)
    assert [p.name for p in tmp_path.iterdir()] == [parent.name]
    if parent.is_dir():
        assert list(parent.iterdir()) == []


def test_run_folder_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with staged_dir(tmp_path / "run") as tmp:
            write_json(tmp / "metrics.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "run" / "metrics.json").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------ run integrity (item 11)


@pytest.fixture(scope="module")
def trained(digits_run):
    """A Gaussian digits run with a checkpoint every epoch (conftest's shared run; the
    tests below tamper with copies of it)."""
    return digits_run("--mech", "gaussian").dir


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def _rehash(run: Path) -> None:
    """What a careful forger would do: re-hash every output into meta.json."""
    from privtool.artifacts import file_hash

    meta = json.loads((run / "meta.json").read_text())
    meta["outputs"] = {n: file_hash(run / n) for n in meta["outputs"]}
    (run / "meta.json").write_text(json.dumps(meta))


def _cli(*args):
    from typer.testing import CliRunner

    from privtool.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("edit", ["emptied", "epsilon_edited"])
def test_edited_metrics_json_is_refused_by_attack_and_calibrate(trained, tmp_path, edit):
    run = _copy(trained, tmp_path / "runs" / "g")
    m = json.loads((run / "metrics.json").read_text())
    assert "metrics.json" in json.loads((run / "meta.json").read_text())["outputs"]
    if edit == "emptied":
        (run / "metrics.json").write_text("{}\n")
    else:
        m["epsilon"] = 0.01
        (run / "metrics.json").write_text(json.dumps(m))
    res = _cli("attack", "--attack", "loss", "--target", str(run), "--out", str(tmp_path / "a"))
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert "metrics.json does not match the hash" in res.output
    res = _cli("calibrate", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "c"))
    assert res.exit_code == 1 and "metrics.json does not match the hash" in res.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_a_run_without_a_metrics_hash_is_refused(trained, tmp_path):
    run = _copy(trained, tmp_path / "g")
    meta = json.loads((run / "meta.json").read_text())
    del meta["outputs"]["metrics.json"]  # as written before metrics.json was hashed
    (run / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(PrivtoolError, match="metrics.json is not covered by the hashes"):
        load_run(run)


@pytest.mark.parametrize(
    "where",
    ["../other/checkpoints/epoch-1.pt", "/etc/passwd", "link.pt", "checkpoints/../model.pt"],
)
def test_checkpoint_paths_resolve_inside_the_run_only(trained, tmp_path, where):
    from privtool.checkpoints import load_checkpoint

    other = _copy(trained, tmp_path / "other")
    run = _copy(trained, tmp_path / "g")
    if where == "link.pt":
        (run / "link.pt").symlink_to(other / "model.pt")
    m = json.loads((run / "metrics.json").read_text())
    m["checkpoints"][0]["file"] = where
    (run / "metrics.json").write_text(json.dumps(m))
    _rehash(run)
    with pytest.raises(PrivtoolError, match="not a path inside the run|leads outside|not covered"):
        load_checkpoint(f"{run}@1")
    assert load_checkpoint(f"{other}@1")[1]["epoch"] == 1  # the untouched run still loads


def test_calibrate_warns_about_runs_without_a_valid_epsilon(tmp_path):
    from calibrate_fixtures import make_train

    from privtool.calibrate import build, calibrate_settings, collect

    make_train(tmp_path, "g1", epsilon=1.0)
    bad = make_train(tmp_path, "g2", epsilon=2.0)
    m = json.loads((bad / "metrics.json").read_text())
    meta = json.loads((bad / "meta.json").read_text())
    meta["params"]["train"]["epsilon"] = None
    m.pop("epsilon")
    (bad / "metrics.json").write_text(json.dumps(m))
    (bad / "meta.json").write_text(json.dumps(meta))
    _rehash(bad)
    cal = build(collect(tmp_path), calibrate_settings({}))
    assert any(str(bad) in w and "no valid ε" in w for w in cal.warnings)
    assert not any(str(tmp_path / "g1") in w for w in cal.warnings)


def test_interrupt_just_after_the_partial_is_made_leaves_nothing(tmp_path, monkeypatch):
    """The window the SIGTERM flake hit: an interrupt between creating the partial folder and
    the next statement (the old code chmod-ed it outside the clean-up's try)."""
    out = tmp_path / "run"
    real_mkdir = Path.mkdir

    def mkdir_then_interrupt(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if self.name.endswith(".partial"):
            raise KeyboardInterrupt

    monkeypatch.setattr(Path, "mkdir", mkdir_then_interrupt)
    with pytest.raises(KeyboardInterrupt), staged_dir(out):
        pass
    assert list(tmp_path.iterdir()) == []


NESTED_EVAL = r"""
import ctypes, os, signal, sys
from privtool.cli import _on_sigterm
signal.signal(signal.SIGTERM, _on_sigterm)
run = ctypes.pythonapi.PyRun_String
run.restype = ctypes.py_object
run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
g = {"__builtins__": __builtins__, "os": os, "signal": signal}
try:  # the signal lands while C code evaluates Python (as some extensions do mid-training)
    run(b"os.kill(os.getpid(), signal.SIGTERM)\nwhile True: pass", 257, g, g)
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_sigterm_inside_nested_c_evaluation_still_exits_130_under_python_m(tmp_path):
    """The real-CLI flake (exit by SIGINT after a clean 130): CPython flags a bare
    KeyboardInterrupt unwinding out of PyRun_String and, under ``python -m``, kills itself with
    SIGINT at exit. The handler raises privtool.errors.Terminated, which the flag ignores."""
    (tmp_path / "nested_eval.py").write_text(NESTED_EVAL)
    env = {**ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ENV['PYTHONPATH']}"}
    proc = subprocess.run(
        [sys.executable, "-m", "nested_eval"], env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == 130, proc.stderr
