import pytest

from privtool.config import apply_overrides, defaults, load_params
from privtool.errors import PrivtoolError


def test_defaults_without_file(tmp_path):
    p = load_params(tmp_path / "absent.yaml")
    assert p.train.mech == "gaussian" and p.data.dataset == "mnist-5k"


def test_file_then_overrides(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  epochs: 3\n  delta: 1e-6\ndata:\n  dataset: digits\n")
    p = load_params(f, ["train.epochs=7", "train.mech=vmf", "data.splits.train=0.4"])
    assert p.train.epochs == 7 and p.train.mech == "vmf" and p.train.delta == 1e-6
    assert p.data.dataset == "digits" and p.data.splits["train"] == 0.4
    assert p.data.splits["test"] == 0.2  # untouched keys of a nested mapping survive


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.epochz=3", "unknown params key train.epochz; valid keys in 'train': .*epochs"),
        ("train.epsilon=0", "train.epsilon=0 is not allowed"),
        ("train.epsilon=-1", "train.epsilon=-1"),
        ("train.kappa=-2", "train.kappa=-2"),
        ("train.delta=1.5", "train.delta"),
        ("train.partition=diagonal", "whole, layer or row"),
        ("data.splits.train=1.2", "data.splits.train"),
        ("nosection.key=1", "unknown params section 'nosection'"),
        ("justakey=1", "must look like section.key=value"),
    ],
)
def test_bad_values_name_the_key(tmp_path, override, match):
    with pytest.raises(PrivtoolError, match=match):
        load_params(tmp_path / "absent.yaml", [override])


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(PrivtoolError, match="not found"):
        load_params(tmp_path / "nope.yaml", required=True)


def test_malformed_yaml_is_one_line_error(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train: [unclosed\n")
    with pytest.raises(PrivtoolError, match="not valid YAML"):
        load_params(f)


def test_overrides_parse_yaml_scalars():
    out = apply_overrides(defaults(), ["train.epsilon=1e-1", "train.kappa=null", "train.lr=0.1"])
    assert out["train"]["epsilon"] == 0.1 and out["train"]["kappa"] is None
