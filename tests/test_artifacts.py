import json

import pytest
import torch

from privtool.artifacts import (
    dumps,
    load_run,
    load_state_dict,
    parse_target,
    staged_dir,
    write_json,
)
from privtool.errors import PrivtoolError
from privtool.stages.common import finish_run


def test_dumps_is_strict_json():
    text = dumps({"a": float("inf"), "b": float("nan"), "c": 1.5})
    assert json.loads(text) == {"a": None, "b": None, "c": 1.5}
    assert "Infinity" not in text and "NaN" not in text


def test_staged_dir_keeps_previous_output_on_failure(tmp_path):
    out = tmp_path / "run"
    with staged_dir(out) as tmp:
        write_json(tmp / "metrics.json", {"v": 1})
    with pytest.raises(RuntimeError):
        with staged_dir(out) as tmp:
            write_json(tmp / "metrics.json", {"v": 2})
            raise RuntimeError("killed")
    assert json.loads((out / "metrics.json").read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no partial dirs left behind


def _fake_run(tmp_path):
    out = tmp_path / "run"
    with staged_dir(out) as tmp:
        torch.save({"w": torch.ones(3)}, tmp / "model.pt")
        finish_run(
            tmp,
            stage="train",
            params={},
            metrics={"test_accuracy": 0.5},
            inputs={},
            device="cpu",
            payload=["model.pt"],
        )
    return out


def test_load_run_detects_truncation_and_wrong_stage(tmp_path):
    out = _fake_run(tmp_path)
    assert load_run(out)["metrics"]["test_accuracy"] == 0.5
    with pytest.raises(PrivtoolError, match="written by stage 'train', not 'attack'"):
        load_run(out, stage="attack")
    data = (out / "model.pt").read_bytes()
    (out / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(PrivtoolError, match="does not match the hash"):
        load_run(out)
    with pytest.raises(PrivtoolError, match="corrupt"):
        load_state_dict(out / "model.pt")


def test_load_run_missing_and_corrupt_meta(tmp_path):
    with pytest.raises(PrivtoolError, match="does not exist; make it with `privtool train"):
        load_run(tmp_path / "nope")
    out = _fake_run(tmp_path)
    (out / "meta.json").write_text("{not json")
    with pytest.raises(PrivtoolError, match="meta.json is corrupt"):
        load_run(out)


def test_parse_target():
    assert parse_target("runs/a@3") == (parse_target("runs/a")[0], 3)
    with pytest.raises(PrivtoolError):
        parse_target("runs/a@x")
