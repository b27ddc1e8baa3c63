"""privtool report: one self-contained page that embeds or links every file of a folder."""

import base64
import json
import os
import re
from pathlib import Path

import pytest
from calibrate_fixtures import standard_runs
from typer.testing import CliRunner

from privtool.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = standard_runs(root)
    out = tmp_path_factory.mktemp("results") / "calibration"
    res = runner.invoke(app, ["calibrate", "--runs", str(root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return root, runs, out


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_report_embeds_every_png_and_links_every_file(calibrated, tmp_path):
    root, runs, cal = calibrated
    page = tmp_path / "site" / "report.html"
    res = runner.invoke(app, ["report", str(cal), "--out", str(page), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    html = page.read_text()
    md = page.with_suffix(".md").read_text()
    assert info["html"] == str(page) and info["n_files"] == len(_files(cal))
    for f in _files(cal):
        rel = os.path.relpath(f, page.parent).replace(os.sep, "/")
        assert f"href='{rel}'" in html, rel
        assert f"]({rel})" in md, rel
        if f.suffix == ".png":
            assert base64.b64encode(f.read_bytes()).decode() in html, rel
    # self-contained: no image or script fetched from anywhere
    assert not re.search(r"src=['\"](?!data:)", html) and "<script" not in html
    for title in (
        "Paper 1 Table 5 view",
        "Paper 1 Table 7 view",
        "Equivalent gaussian ε",
        "Accuracy-matched comparison",
    ):
        assert title in html and title in md
    # each run's settings and the exact command that remakes it
    assert f"privtool train --out {runs['v50']}" in html
    assert "train.epsilon_v=50" in html and "attack.iga.iterations=" in html
    assert "protects like gaussian" in md


def test_report_of_a_runs_folder_calibrates_in_memory(calibrated, tmp_path):
    root, runs, _ = calibrated
    before = _files(root)
    page = tmp_path / "runs.html"
    res = runner.invoke(app, ["report", str(root), "--out", str(page)])
    assert res.exit_code == 0, res.output
    assert _files(root) == before  # nothing written into the runs folder
    html = page.read_text()
    assert "frontier-loss-auc.png" in html and "data:image/png;base64," in html
    grid = next(p for p in before if p.name == "grid.png")
    assert base64.b64encode(grid.read_bytes()).decode() in html
    assert f"href='{os.path.relpath(runs['g1'] / 'meta.json', tmp_path)}'" in html


def test_report_default_out_is_inside_the_folder_and_rerunnable(calibrated, tmp_path):
    _, _, cal = calibrated
    import shutil

    folder = tmp_path / "cal"
    shutil.copytree(cal, folder)
    for _ in range(2):  # the page never lists itself
        res = runner.invoke(app, ["report", str(folder)])
        assert res.exit_code == 0, res.output
    html = (folder / "report.html").read_text()
    assert "href='report.html'" not in html and "href='report.md'" not in html


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_report_bad_input_is_one_line_and_exit_1(tmp_path, case):
    folder = tmp_path / "f"
    if case == "empty":
        (folder / "sub").mkdir(parents=True)
    res = runner.invoke(app, ["report", str(folder), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 1
    assert res.output.count("\n") == 1 and res.output.startswith("error:")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
def test_train_attack_calibrate_report_end_to_end(tmp_path):
    """The real stages on a tiny dataset, then calibrate and report over their output."""
    runs = tmp_path / "runs"
    fast = [
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        "2",
        "--set",
        "train.batch_size=64",
    ]
    for name, extra in (
        ("g1", ["--mech", "gaussian", "--epsilon", "1"]),
        ("g8", ["--mech", "gaussian", "--epsilon", "8"]),
        ("v", ["--mech", "vmf", "--set", "train.epsilon_v=50000"]),
    ):
        res = runner.invoke(app, ["train", *extra, *fast, "--out", str(runs / "train" / name)])
        assert res.exit_code == 0, res.output
        res = runner.invoke(
            app,
            [
                "attack",
                "--attack",
                "loss",
                "--target",
                str(runs / "train" / name),
                "--out",
                str(runs / "attack" / "loss" / name),
            ],
        )
        assert res.exit_code == 0, res.output
    out = tmp_path / "cal"
    res = runner.invoke(app, ["calibrate", "--runs", str(runs), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "calibration.json").read_text())
    assert len(doc["rows"]) == 3 and all(r["loss_auc"] is not None for r in doc["rows"])
    assert any(e["target"].endswith("/v") and e["relation"] for e in doc["equivalent"])
    res = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
