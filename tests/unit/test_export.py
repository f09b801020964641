"""export: TorchScript and ONNX files that reproduce the bundle's model on real rows, from
inputs built as the module docstring of pipeline.predict.export says; a file that does
not reproduce it is never written. No Spark: bundles are built here from the shipped raw
data (featurizer statistics computed with numpy, weights from a seeded init)."""
from __future__ import annotations

import dataclasses
import gzip
import json
import sys
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.config import load_config
from pipeline.models import build_model
from pipeline.predict import predict
from pipeline.predict.bundle import read_bundle
from pipeline.predict.export import TOLERANCE, ExportError, Exportable, export_model, write_checked
from pipeline.predict.samples import from_input
from pipeline.prep.ucr import parse_case
from pipeline.train.run_dir import BUNDLE_DATA_SECTIONS
from tests.conftest import DIGITS_CONF, DIGITS_CSV, REPO

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

VOWELS_TEST = REPO / "data" / "raw" / "ucr" / "JapaneseVowels_TEST.ts"
GUNPOINT_TEST = REPO / "data" / "raw" / "ucr" / "GunPoint_TEST.ts"


def _save_bundle(path, cfg, schema, featurizer, fit=None):
    torch.manual_seed(0)
    model = build_model(cfg.model, schema, featurizer)
    if fit is not None:  # a few steps, so the model tells rows apart
        batch, labels = fit
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(30):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(batch), labels).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():  # batch-norm statistics away from the identity, so constants matter
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    torch.save({"format_version": 1, "model": dataclasses.asdict(cfg.model), "schema": schema, "featurizer": featurizer,
                "dataset_fingerprint": "test", "state_dict": model.state_dict(),
                "data": {k: v for k, v in dataclasses.asdict(cfg.data).items() if k in BUNDLE_DATA_SECTIONS}}, path)
    return path


def digits_bundle(tmp_path):
    cfg = load_config(DIGITS_CONF, [f"data.source.path={DIGITS_CSV}"])
    table = np.loadtxt(gzip.open(DIGITS_CSV, "rt"), delimiter=",")
    pixels = table[:, :64]
    schema = {"features": {"image": {"kind": "tensor", "dtype": "uint8", "shape": [1, 8, 8]}},
              "label": {"column": "label", "source_column": "c64", "num_classes": 10, "classes": [str(i) for i in range(10)]}}
    featurizer = {"image": {"type": "standardize", "axis": "channel", "mean": [float(pixels.mean())], "std": [float(pixels.std())],
                            "applied_in": "model", "source_columns": [f"c{i}" for i in range(64)]}}
    fit = ({"image": torch.tensor(pixels, dtype=torch.uint8).view(-1, 1, 8, 8)}, torch.tensor(table[:, 64], dtype=torch.int64))
    return _save_bundle(tmp_path / "digits.pt", cfg, schema, featurizer, fit)


def _series(path):
    lines = [l for l in path.read_text().splitlines() if l and not l.startswith(("@", "#"))]
    dims = 12 if "Vowels" in path.name else 1
    return [parse_case(l, dims) for l in lines]


def series_bundle(tmp_path, conf, test_file, *overrides):
    cfg = load_config(REPO / "conf" / conf, [f"data.source.path={test_file}", *overrides])
    cases = _series(test_file)
    dims, lengths = cases[0][3], {c[2] for c in cases}
    fixed = lengths.pop() if len(lengths) == 1 else None
    values = np.concatenate([np.asarray(c[1]).reshape(dims, -1) for c in cases], axis=1)
    per_channel = cfg.data.sequence.normalize == "per_channel"
    mean, std = (values.mean(1).tolist(), values.std(1).tolist()) if per_channel else ([0.0] * dims, [1.0] * dims)
    spec = {"kind": "tensor", "dtype": "float32", "shape": [dims, fixed]} if fixed else {"kind": "sequence", "dtype": "float32", "dims": dims}
    classes = sorted({c[0] for c in cases})
    schema = {"features": {"series": spec}, "label": {"column": "label", "source_column": "label", "num_classes": len(classes), "classes": classes}}
    featurizer = {"series": {"type": "standardize", "axis": "channel", "mean": mean, "std": std, "applied_in": "prepare",
                             "normalize": cfg.data.sequence.normalize, "length": fixed}}
    return _save_bundle(tmp_path / f"{conf}.pt", cfg, schema, featurizer)


def table_bundle(tmp_path):
    """A generated CSV with numeric and categorical columns, and an MLP with embeddings."""
    rng = np.random.default_rng(0)
    rows = 200
    x = rng.normal(3.0, 2.0, size=(rows, 3))
    cats = rng.choice(["red", "green", "blue", "cyan"], size=(rows, 2))
    lines = ["x0,x1,x2,c0,c1,label"] + [f"{a:.4f},{b:.4f},{c:.4f},{d},{e},{'yes' if a > 3 else 'no'}" for (a, b, c), (d, e) in zip(x, cats)]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    cfg = load_config(None, ["data.source.type=csv", f"data.source.path={tmp_path / 'table.csv'}", "data.source.header=true",
                             "data.table.numeric=[x0,x1,x2]", "data.table.categorical=[c0,c1]", "model.type=mlp", "model.hidden=[16]"])
    schema = {"features": {"numeric": {"kind": "tensor", "dtype": "float32", "shape": [3], "columns": ["x0", "x1", "x2"]},
                           "categorical": {"kind": "categorical", "dtype": "int32", "shape": [2], "columns": ["c0", "c1"], "cardinalities": [4, 4]}},
              "label": {"column": "label", "source_column": "label", "num_classes": 2, "classes": ["no", "yes"]}}
    featurizer = {"numeric": {"type": "standardize", "axis": "column", "mean": x.mean(0).tolist(), "std": x.std(0).tolist(),
                              "applied_in": "prepare", "source_columns": ["x0", "x1", "x2"]},
                  "categorical": {"type": "vocabulary", "oov_index": 0, "columns": ["c0", "c1"],
                                  "vocabularies": {"c0": ["red", "green", "blue"], "c1": ["blue", "red", "green"]}}}
    return _save_bundle(tmp_path / "table.pt", cfg, schema, featurizer), tmp_path / "table.csv"


def _run(path, fmt, inputs):
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path))(*inputs).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(["probabilities"], {n: x.numpy() for n, x in zip(names, inputs)})[0]


def _predicted(model, source, tmp_path, rows):
    """predict's probabilities (score's, see tests/spark/test_predict.py) for the first rows."""
    out = tmp_path / f"pred-{model.stem}.parquet"
    if not out.exists():
        predict(model, source, out)
    return np.stack(pq.read_table(out).column("probabilities").to_pylist()[:rows])


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_digits_export_takes_raw_pixels(tmp_path, fmt):
    model = digits_bundle(tmp_path)
    result = export_model(model, fmt, tmp_path / f"digits.{fmt}", input_path=DIGITS_CSV)
    assert result.rows_checked == 32 and result.max_difference <= TOLERANCE
    pixels = np.loadtxt(gzip.open(DIGITS_CSV, "rt"), delimiter=",")[:100, :64]
    got = _run(result.output, fmt, (torch.tensor(pixels, dtype=torch.float32).view(-1, 1, 8, 8),))
    np.testing.assert_allclose(got, _predicted(model, DIGITS_CSV, tmp_path, 100), atol=TOLERANCE, rtol=0)
    assert np.unique(got.argmax(1)).size > 1  # not a constant model: the comparison means something


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("conf,overrides", [("vowels_rnn.yaml", ["data.sequence.normalize=per_series"]),
                                            ("vowels_cnn.yaml", []),
                                            ("vowels_rnn.yaml", ["model.rnn_cell=gru", "model.rnn_layers=2"])])
def test_variable_length_series_export_takes_raw_padded_series(tmp_path, fmt, conf, overrides):
    model = series_bundle(tmp_path, conf, VOWELS_TEST, *overrides)
    result = export_model(model, fmt, tmp_path / f"m.{fmt}", input_path=VOWELS_TEST)
    assert result.max_difference <= TOLERANCE
    cases = _series(VOWELS_TEST)[:50]
    longest = max(c[2] for c in cases)
    x = torch.zeros(len(cases), longest, 12)
    for i, (_, values, length, dims, _) in enumerate(cases):
        x[i, :length] = torch.tensor(values, dtype=torch.float32).view(dims, length).T  # channel-major -> time-major
    lengths = torch.tensor([c[2] for c in cases])
    np.testing.assert_allclose(_run(result.output, fmt, (x, lengths)), _predicted(model, VOWELS_TEST, tmp_path, 50), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("model_type", ["cnn", "rnn"])
def test_equal_length_series_export(tmp_path, fmt, model_type):
    model = series_bundle(tmp_path, "gunpoint_cnn.yaml", GUNPOINT_TEST, f"model.type={model_type}")
    result = export_model(model, fmt, tmp_path / f"g.{fmt}", input_path=GUNPOINT_TEST)
    x = torch.tensor(np.stack([c[1] for c in _series(GUNPOINT_TEST)[:40]]), dtype=torch.float32).view(40, 1, 150)
    np.testing.assert_allclose(_run(result.output, fmt, (x,)), _predicted(model, GUNPOINT_TEST, tmp_path, 40), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_table_export_takes_raw_numbers_and_vocabulary_codes(tmp_path, fmt):
    model, csv = table_bundle(tmp_path)
    result = export_model(model, fmt, tmp_path / f"t.{fmt}", input_path=csv)
    assert [i["name"] for i in result.inputs] == ["numeric", "categorical"]
    rows = [l.split(",") for l in csv.read_text().splitlines()[1:61]]
    vocab = read_bundle(model)["featurizer"]["categorical"]["vocabularies"]
    numeric = torch.tensor([[float(v) for v in r[:3]] for r in rows])
    codes = torch.tensor([[vocab[c].index(v) + 1 if v in vocab[c] else 0 for c, v in zip(("c0", "c1"), r[3:5])] for r in rows])
    np.testing.assert_allclose(_run(result.output, fmt, (numeric, codes)), _predicted(model, csv, tmp_path, 60), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_tampered_constant_fails_the_check_and_writes_nothing(tmp_path, fmt):
    model = digits_bundle(tmp_path)
    bundle = read_bundle(model)
    module = Exportable(bundle).eval()
    sample = from_input(bundle, module, str(model), str(DIGITS_CSV), None, 32)
    with torch.no_grad():
        module.image_mean += 0.5  # half a grey level off
    with pytest.raises(ExportError, match="differ from the bundle's model"):
        write_checked(module, bundle, sample, fmt, str(tmp_path / "bad"))
    assert list(tmp_path.iterdir()) == [model]


def test_the_file_names_its_inputs_and_classes(tmp_path):
    model = digits_bundle(tmp_path)
    ts = export_model(model, "torchscript", tmp_path / "m.ts", input_path=DIGITS_CSV).output
    with zipfile.ZipFile(ts) as z:
        meta = json.loads(z.read(next(n for n in z.namelist() if n.endswith("extra/pipeline.json"))))
    assert meta["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["B", 1, 8, 8]}]
    assert meta["classes"] == [str(i) for i in range(10)]
    import onnx

    onnx_file = export_model(model, "onnx", tmp_path / "m.onnx", input_path=DIGITS_CSV).output
    props = {p.key: p.value for p in onnx.load(onnx_file).metadata_props}
    assert json.loads(props["pipeline"])["inputs"] == meta["inputs"]
    with pytest.raises(ExportError, match="already exists"):
        export_model(model, "onnx", onnx_file, input_path=DIGITS_CSV)


def test_onnx_without_its_packages_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # what an environment without the package gives
    with pytest.raises(ExportError, match=r"pip install 'pipeline\[export\]'"):
        export_model(digits_bundle(tmp_path), "onnx", tmp_path / "m.onnx", input_path=DIGITS_CSV)
    assert not (tmp_path / "m.onnx").exists()
