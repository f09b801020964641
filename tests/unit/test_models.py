import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.models import ModelError, build_model


def _schema(shape, classes=10, name="x"):
    return {"features": {name: {"kind": "tensor", "dtype": "uint8", "shape": shape}}, "label": {"num_classes": classes}}


@pytest.mark.parametrize("shape", [[1, 8, 8], [3, 32, 32], [2, 150]])
def test_cnn_output_is_batch_by_classes(shape):
    model = build_model(ModelConfig(type="cnn", channels=[8, 16]), _schema(shape, 7))
    assert model({"x": torch.randn(5, *shape)}).shape == (5, 7)


def test_mlp_flattens_any_shape():
    model = build_model(ModelConfig(type="mlp", hidden=[32, 16]), _schema([1, 8, 8], 3))
    assert model({"x": torch.randn(4, 1, 8, 8)}).shape == (4, 3)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear[0].in_features == 64 and linear[-1].out_features == 3


def test_sizes_come_from_the_manifest_not_the_config():
    a = build_model(ModelConfig(type="cnn"), _schema([1, 8, 8], 2))
    b = build_model(ModelConfig(type="cnn"), _schema([3, 8, 8], 2))
    assert next(a.parameters()).shape[1] == 1 and next(b.parameters()).shape[1] == 3


def test_mlp_embeds_categorical_columns():
    schema = {
        "features": {
            "numeric": {"kind": "tensor", "dtype": "float32", "shape": [5]},
            "categorical": {"kind": "categorical", "dtype": "int32", "shape": [2], "cardinalities": [4, 11]},
        },
        "label": {"num_classes": 3},
    }
    model = build_model(ModelConfig(type="mlp", hidden=[16]), schema)
    out = model({"numeric": torch.randn(6, 5), "categorical": torch.tensor([[0, 10]] * 6)})
    assert out.shape == (6, 3) and [e.num_embeddings for e in model.embeddings] == [4, 11]


def test_rnn_result_does_not_depend_on_padding():
    schema = {"features": {"s": {"kind": "sequence", "dtype": "float32", "dims": 3}}, "label": {"num_classes": 2}}
    model = build_model(ModelConfig(type="rnn", rnn_hidden=8, bidirectional=True), schema).eval()
    seq = torch.randn(1, 5, 3)
    alone = model({"s": seq, "s_length": torch.tensor([5])})
    padded = torch.cat([seq, torch.randn(1, 7, 3)], dim=1)  # garbage after the real steps
    assert torch.allclose(alone, model({"s": padded, "s_length": torch.tensor([5])}), atol=1e-6)


def test_cnn_on_variable_length_series_ignores_padding_and_matches_the_equal_length_form():
    schema = {"features": {"s": {"kind": "sequence", "dtype": "float32", "dims": 3}}, "label": {"num_classes": 2}}
    torch.manual_seed(0)
    model = build_model(ModelConfig(type="cnn", channels=[4, 6], kernel_size=3), schema)
    for _ in range(3):  # train-mode passes move the batch-norm statistics away from their initial values
        model({"s": torch.randn(4, 9, 3), "s_length": torch.tensor([9, 5, 2, 7])})
    model.eval()
    seq = torch.randn(1, 5, 3)
    alone = model({"s": seq, "s_length": torch.tensor([5])})
    padded = torch.cat([seq, torch.randn(1, 7, 3)], dim=1)  # garbage after the real steps
    assert torch.allclose(alone, model({"s": padded, "s_length": torch.tensor([5])}), atol=1e-6)
    # The same weights on the equal-length form [B, dims, L] give the same logits.
    fixed = build_model(ModelConfig(type="cnn", channels=[4, 6], kernel_size=3), _schema([3, 5], 2, name="s")).eval()
    fixed.load_state_dict(model.state_dict())
    assert torch.allclose(alone, fixed({"s": seq.transpose(1, 2)}), atol=1e-5)
    # In training, batch-norm statistics count only the valid steps: padding does not change them.
    train = build_model(ModelConfig(type="cnn", channels=[4], kernel_size=3), schema)
    rows = torch.randn(2, 6, 3)
    short = train({"s": rows, "s_length": torch.tensor([6, 4])})
    longer = train({"s": torch.cat([rows, torch.randn(2, 10, 3)], dim=1), "s_length": torch.tensor([6, 4])})
    assert torch.allclose(short, longer, atol=1e-5)


def test_rnn_reads_equal_length_series_too():
    model = build_model(ModelConfig(type="rnn", rnn_hidden=8), _schema([2, 30], 4))
    assert model({"x": torch.randn(3, 2, 30)}).shape == (3, 4)


def test_unusable_combination_is_refused():
    with pytest.raises(ModelError, match="cnn needs"):
        build_model(ModelConfig(type="cnn"), _schema([64]))
    with pytest.raises(ModelError, match="use model.type=rnn"):
        build_model(ModelConfig(type="mlp"), {"features": {"s": {"kind": "sequence", "dims": 2}}, "label": {"num_classes": 2}})
