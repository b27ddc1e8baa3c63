"""End to end: the DVC pipeline on a fresh copy of the project, offline, then a no-op rerun."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dvc_repro_train_sweep_then_noop(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, proj / name)
    shutil.copytree(ROOT / "privtool", proj / "privtool",
                    ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["epochs"] = 1  # the same grid, shorter
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(*cmd):
        res = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout + res.stderr

    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "repro", "train")
    cells = params["sweep"]["train"]
    for cell in cells:
        assert (proj / "runs" / "train" / cell / "metrics.json").is_file(), cell
        assert (proj / "runs" / "train" / cell / "model.pt").is_file(), cell
    again = run(sys.executable, "-m", "dvc", "repro", "train")
    assert "Running stage" not in again
    assert run(sys.executable, "-m", "dvc", "status", "train").strip().endswith("up to date.")
