"""End to end: the whole DVC pipeline (train → attack → store → select → calibrate → report) on a
fresh copy of the project, offline, with the default grid made short, then a no-op rerun."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def shortened(params: dict) -> dict:
    """The default params with every cell kept but every loop made short."""
    params["train"]["epochs"] = 1
    for cell in params["sweep"]["train"].values():
        cell["args"] = cell["args"].replace("--epochs 30", "--epochs 2")
    params["attack"]["n_models"] = 2
    params["sweep"]["attack"].update(n_targets=2, iga_iterations=10, inversion_iterations=10)
    params["select"]["finetune"]["epochs"] = 2
    params["select"]["curve"].update(budgets=[10], seeds=1)
    params["sweep"]["select"]["budgets"] = [10]
    params["audit"]["canaries"] = 200
    return params


@pytest.mark.slow
def test_dvc_repro_whole_pipeline_then_noop(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, proj / name)
    shutil.copytree(
        ROOT / "privtool", proj / "privtool", ignore=shutil.ignore_patterns("__pycache__")
    )
    params = shortened(yaml.safe_load((ROOT / "params.yaml").read_text()))
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    def run(*cmd):
        res = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        return res.stdout + res.stderr

    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "repro")

    cells = params["sweep"]["train"]
    for cell in cells:
        assert (proj / "runs" / "train" / cell / "model.pt").is_file(), cell
        for attack in ("iga", "inversion", "loss", "reference", "lira", "rmia"):
            assert (proj / "runs" / "attack" / attack / cell / "metrics.json").is_file(), (
                attack,
                cell,
            )
    cal = proj / "results" / "calibration"
    assert (cal / "calibration.md").is_file()
    assert list(cal.glob("frontier-*.png")), "no frontier plot"
    html = (proj / "results" / "report.html").read_text()
    assert "<img" in html and "calibration" in html.lower()
    # every train cell is a row of the table, traced to its run directory and meta.json hash
    rows = json.loads((cal / "calibration.json").read_text())
    rows = rows["rows"]
    train_rows = {
        Path(r["run"]).name: r for r in rows if r["stage"] == "train" and r["checkpoint"] is None
    }
    assert set(cells) <= set(train_rows), sorted(train_rows)
    meta = (proj / "runs" / "train" / "none" / "meta.json").read_bytes()
    assert train_rows["none"]["run_meta_sha256"] == hashlib.sha256(meta).hexdigest()
    assert any(r["stage"] == "select" for r in rows)
    for cell in params["sweep"]["audit"]:  # the ε sandwich of every audited cell
        assert (proj / "runs" / "audit" / cell / "audit.json").is_file(), cell
        assert (
            train_rows[cell]["audit_sandwich"]
            and "VIOLATED" not in train_rows[cell]["audit_sandwich"]
        )

    again = run(sys.executable, "-m", "dvc", "repro")
    assert "Running stage" not in again
    assert run(sys.executable, "-m", "dvc", "status").strip().endswith("up to date.")
