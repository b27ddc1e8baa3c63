"""Contract test over every registered model: Opacus-valid, any input shape, right outputs."""

import pytest
import torch
from opacus.validators import ModuleValidator

from privtool.errors import PrivtoolError
from privtool.models import MODELS, build_model

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 64, 64)]


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("shape", SHAPES)
def test_every_model_is_dp_compatible_for_any_input(name, shape):
    try:
        model = build_model(name, shape, n_classes=7)
    except PrivtoolError as e:  # a model may refuse inputs too small for its kernels
        assert "cannot take inputs" in str(e) and shape == (1, 8, 8)
        return
    assert ModuleValidator.validate(model, strict=False) == []
    out = model(torch.rand(5, *shape))
    assert out.shape == (5, 7)
    assert model.embed(torch.rand(2, *shape)).shape[0] == 2
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_lenet_matches_dlg_architecture():
    m = build_model("lenet", (1, 28, 28), 10)
    convs = [l for l in m.modules() if isinstance(l, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [12, 12, 12]
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (1, 1)]
    assert sum(p.numel() for p in m.parameters()) == 312 + 3612 + 3612 + 12 * 7 * 7 * 10 + 10


def test_unknown_model_lists_valid_names():
    with pytest.raises(PrivtoolError, match="valid: .*lenet.*mlp"):
        build_model("resnet9000", (1, 28, 28), 10)


def test_top_k_accuracy_counts_labels_among_the_k_largest_logits():
    import torch

    from privtool.training import top_k_accuracy

    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0], [0.0, 9.0, 1.0, 2.0]])
    model = torch.nn.Identity()
    y = torch.tensor([2, 0, 1])
    assert top_k_accuracy(model, logits, y, 1, batch_size=2) == pytest.approx(1 / 3)
    assert top_k_accuracy(model, logits, y, 3, batch_size=2) == pytest.approx(2 / 3)
    assert top_k_accuracy(model, logits, y, 10, batch_size=2) == 1.0
