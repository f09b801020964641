import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.models import ModelError, build_model


def _schema(shape, classes=10):
    return {"features": {"x": {"kind": "tensor", "dtype": "uint8", "shape": shape}}, "label": {"num_classes": classes}}


@pytest.mark.parametrize("shape", [[1, 8, 8], [3, 32, 32], [2, 150]])
def test_cnn_output_is_batch_by_classes(shape):
    model = build_model(ModelConfig(type="cnn", channels=[8, 16]), _schema(shape, 7))
    assert model(torch.randn(5, *shape)).shape == (5, 7)


def test_mlp_flattens_any_shape():
    model = build_model(ModelConfig(type="mlp", hidden=[32, 16]), _schema([1, 8, 8], 3))
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 3)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear[0].in_features == 64 and linear[-1].out_features == 3


def test_sizes_come_from_the_manifest_not_the_config():
    a = build_model(ModelConfig(type="cnn"), _schema([1, 8, 8], 2))
    b = build_model(ModelConfig(type="cnn"), _schema([3, 8, 8], 2))
    assert next(a.parameters()).shape[1] == 1 and next(b.parameters()).shape[1] == 3


def test_unusable_combination_is_refused():
    with pytest.raises(ModelError, match="cnn needs"):
        build_model(ModelConfig(type="cnn"), _schema([64]))
