"""``export``: the bundle's model as one self-contained TorchScript or ONNX file.

The exported model takes the featurized but not standardised inputs, one per feature in
the model's schema order (:func:`input_spec` lists them; the file carries the list too):

- a tensor feature: float32 ``[B, *shape]``, the raw numbers (an image's pixel values
  0..255 as decoded, [C, H, W]; a table's numeric column values; a series' values
  [dims, length], gaps already filled as ``data.sequence.missing`` says);
- a categorical feature: int64 ``[B, columns]``, each value's 1-based position in the
  bundle's ``featurizer[<name>]['vocabularies'][column]`` (0: not in it);
- a variable-length series: float32 ``[B, T, dims]`` time-major, zero-padded past each
  row's length, and int64 ``<name>_length`` ``[B]``.

Inside the graph: per-series z-normalisation (when the model was trained with
``data.sequence.normalize=per_series``), the fitted per-channel/per-column mean and std
as constants, the network, and a softmax: the output ``probabilities`` [B, classes] in
the bundle's class order (``schema['label']['classes']``).

Before anything is written, the file is reloaded (``torch.jit.load`` / onnxruntime) and
run on real rows (the run's test split, or a given raw input featurized as predict does);
its probabilities must be within :data:`TOLERANCE` of the bundle's model applied as score
applies it, else nothing is written.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import torch
from torch import nn

from pipeline import storage
from pipeline.predict.bundle import PredictError, model_from_bundle, read_bundle
from pipeline.schema import length_column

TOLERANCE = 1e-4  # largest difference in any probability between the file and the bundle's model
CHECK_ROWS = 32
FORMATS = ("torchscript", "onnx")


class ExportError(PredictError):
    """A model that cannot be exported, or whose exported copy does not reproduce it;
    nothing was written."""


def input_spec(schema: dict) -> list[dict]:
    """The exported model's inputs, in order: name, dtype, shape (``B``: rows, ``T``: steps)."""
    out = []
    for name, spec in schema["features"].items():
        if spec["kind"] == "sequence":
            out += [{"name": name, "dtype": "float32", "shape": ["B", "T", spec["dims"]]},
                    {"name": length_column(name), "dtype": "int64", "shape": ["B"]}]
        else:
            out.append({"name": name, "dtype": "int64" if spec["kind"] == "categorical" else "float32",
                        "shape": ["B", *spec["shape"]]})
    return out


class Exportable(nn.Module):
    """The bundle's model behind its featurizer's constants: raw featurized inputs (see
    :func:`input_spec`) -> probabilities.

    Args:
        bundle: a model bundle (:func:`pipeline.train.run_dir.model_bundle`).
    """

    def __init__(self, bundle: dict):
        super().__init__()
        schema, fitted = bundle["schema"], bundle["featurizer"]
        classifier = model_from_bundle(bundle)
        classifier.standardize = {}  # done here, with buffers that tracing keeps as constants
        self.rnn = _UnpackedRNN(classifier.network) if classifier.kind == "rnn" else None
        self.classifier = classifier if self.rnn is None else None
        self.series_input = classifier.sequence or (classifier.tensors[0] if classifier.kind == "rnn" else None)
        self.specs = list(schema["features"].items())
        self.per_series = set()
        for name, spec in self.specs:
            f = fitted.get(name, {})
            if spec["kind"] == "categorical" or "mean" not in f:
                continue
            view = (1, 1, -1) if spec["kind"] == "sequence" else (-1,) + (1,) * (len(spec["shape"]) - 1)
            self.register_buffer(f"{name}_mean", torch.tensor(f["mean"], dtype=torch.float32).view(view))
            self.register_buffer(f"{name}_std", torch.tensor(f["std"], dtype=torch.float32).view(view))
            if f.get("normalize") == "per_series":
                self.per_series.add(name)

    def standardized(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std with the feature's fitted constants (x itself when it has none)."""
        return (x - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std") if hasattr(self, f"{name}_mean") else x

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        batch, rest = {}, list(inputs)
        for name, spec in self.specs:
            x = rest.pop(0)
            if spec["kind"] == "categorical":
                batch[name] = x.long()
                continue
            x = x.float()
            if spec["kind"] == "sequence":
                lengths = rest.pop(0).long()
                mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).unsqueeze(2).float()  # [B, T, 1]
                if name in self.per_series:
                    x = _z_normalized(x, mask, lengths)
                batch[name], batch[length_column(name)] = self.standardized(name, x) * mask, lengths
            else:
                if name in self.per_series:
                    x = _z_normalized(x.transpose(1, 2), None, None).transpose(1, 2)
                batch[name] = self.standardized(name, x)
        if self.rnn is None:
            return torch.softmax(self.classifier(batch), dim=1)
        x = batch[self.series_input]
        if length_column(self.series_input) in batch:
            lengths = batch[length_column(self.series_input)]
        else:  # an equal-length series [B, dims, L]: every row all L steps
            x = x.transpose(1, 2)
            lengths = torch.ones_like(x[:, 0, 0], dtype=torch.int64) * x.shape[1]
        return torch.softmax(self.rnn(x, lengths), dim=1)


class _UnpackedRNN(nn.Module):
    """:class:`pipeline.models.rnn.RNNClassifier` without packed sequences (which neither
    ONNX exporter takes): each layer and direction is a one-direction RNN with the same
    weights over the padded steps, the backward one over each row's own steps reversed in
    place, and each row's state is read at its last step. Padding comes after a row's
    steps, so it never reaches them: the result is the packed one.

    Args:
        network: a trained RNNClassifier.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        rnn = network.rnn
        self.layers, self.directions, self.head = rnn.num_layers, network.directions, network.head
        self.cells = nn.ModuleList()
        for layer in range(rnn.num_layers):
            width = rnn.input_size if layer == 0 else rnn.hidden_size * self.directions
            for suffix in ("", "_reverse")[: self.directions]:
                cell = type(rnn)(width, rnn.hidden_size, batch_first=True, bias=rnn.bias)
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")[: 4 if rnn.bias else 2]:
                    getattr(cell, f"{name}_l0").data.copy_(getattr(rnn, f"{name}_l{layer}{suffix}").data)
                self.cells.append(cell)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(x.shape[1])[None, :]
        lengths = lengths.long()
        reverse = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)  # [B, T], its own inverse
        last = (lengths - 1).clamp_min(0)[:, None, None]
        finals = []
        for layer in range(self.layers):
            outputs, finals = [], []
            for d in range(self.directions):
                seq = x if d == 0 else _take_steps(x, reverse)
                out, _ = self.cells[layer * self.directions + d](seq)
                finals.append(out.gather(1, last.expand(-1, 1, out.shape[2])).squeeze(1))
                outputs.append(out if d == 0 else _take_steps(out, reverse))
            x = torch.cat(outputs, dim=2)
        return self.head(torch.cat(finals, dim=1))


def _take_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, t]] for [B, T, C] x."""
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


def _z_normalized(x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor | None) -> torch.Tensor:
    """Each row's channels at mean 0, std 1 over its valid steps (``features.z_normalize_batches``):
    x is [B, T, dims]; a constant channel becomes 0."""
    if mask is None:
        mean = x.mean(1, keepdim=True)
        std = ((x - mean) ** 2).mean(1, keepdim=True).sqrt()
    else:
        count = lengths.clamp_min(1).float()[:, None, None]
        mean = (x * mask).sum(1, keepdim=True) / count
        std = (((x - mean) * mask) ** 2).sum(1, keepdim=True).div(count).sqrt()
    return (x - mean) / torch.where(std > 1e-8, std, torch.ones_like(std))


@dataclass
class CheckRows:
    """Real rows to check an export on: the exported model's ``inputs`` and the bundle's
    model's ``expected`` probabilities for them (as score computes them)."""

    inputs: tuple
    expected: torch.Tensor
    source: str


@dataclass(frozen=True)
class ExportResult:
    output: str
    format: str
    rows_checked: int
    max_difference: float
    inputs: list


def export_model(model_path: str, fmt: str, output: str, input_path: str | None = None, data=None,
                 rows: int = CHECK_ROWS) -> ExportResult:
    """Export the model at ``model_path`` as ``fmt`` to ``output``, checked on ``rows`` real
    rows (of ``input_path``, read as ``data`` or the bundle says; else the run's test split).

    Raises:
        ExportError: the format is unknown, the output exists, the export fails, or the
            reloaded file differs from the bundle's model by more than :data:`TOLERANCE`.
    """
    from pipeline.predict.samples import from_input, from_run

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not one of: {', '.join(FORMATS)}")
    model_path, output = storage.absolute(str(model_path)), storage.absolute(str(output))
    input_path = storage.absolute(str(input_path)) if input_path else None
    if storage.exists(output):
        raise ExportError(f"{output} already exists; export never overwrites: choose a new --output or remove it")
    bundle = read_bundle(model_path)
    module = Exportable(bundle).eval()
    sample = from_input(bundle, module, model_path, input_path, data, rows) if input_path else from_run(bundle, module, model_path, rows)
    return write_checked(module, bundle, sample, fmt, output)


def write_checked(module: Exportable, bundle: dict, sample: CheckRows, fmt: str, output: str) -> ExportResult:
    """Export ``module``, reload the file, compare it on ``sample``; write ``output`` only
    when every probability is within :data:`TOLERANCE`."""
    spec = input_spec(bundle["schema"])
    meta = {"inputs": spec, "output": {"name": "probabilities", "dtype": "float32", "shape": ["B", len(bundle["schema"]["label"]["classes"])]},
            "classes": [str(c) for c in bundle["schema"]["label"]["classes"]], "tolerance": TOLERANCE,
            "dataset_fingerprint": bundle.get("dataset_fingerprint")}
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        path = os.path.join(tmp, "model")
        trace_rows = tuple(x[: min(2, len(x))] for x in sample.inputs)  # other batch sizes than the checks'
        run = _torchscript(module, trace_rows, path, meta) if fmt == "torchscript" else _onnx(module, trace_rows, path, spec, meta)
        difference = 0.0
        for rows in (len(sample.expected), 1):  # all check rows at once, and one row alone
            got, want = run(tuple(x[:rows] for x in sample.inputs)), sample.expected[:rows]
            difference = max(difference, float((got - want).abs().max()) if got.shape == want.shape else float("inf"))
        if not difference <= TOLERANCE:
            raise ExportError(f"the exported {fmt} model's probabilities differ from the bundle's model by {difference:.3g} "
                              f"(> {TOLERANCE:g}) on {len(sample.expected)} rows of {sample.source}; nothing was written")
        with open(path, "rb") as f, storage.open_output(output) as out:
            out.write(f.read())
    return ExportResult(output, fmt, len(sample.expected), difference, spec)


def _torchscript(module: nn.Module, trace_inputs: tuple, path: str, meta: dict):
    """Trace ``module``, save it to ``path``; a function running the reloaded file."""
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the check below is what decides
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript's, in torch 2.13: the format was asked for
        try:
            traced = torch.jit.trace(module, trace_inputs, check_trace=False)
        except Exception as err:  # noqa: BLE001 -- any tracing failure: one line naming it
            raise ExportError(f"TorchScript tracing failed: {str(err).strip().splitlines()[0]}") from None
        torch.jit.save(traced, path, _extra_files={"pipeline.json": json.dumps(meta)})
        loaded = torch.jit.load(path)

    def run(inputs: tuple) -> torch.Tensor:
        with torch.no_grad():
            return loaded(*inputs)

    return run


def _onnx(module: nn.Module, trace_inputs: tuple, path: str, spec: list, meta: dict):
    """Export ``module`` to ``path`` as ONNX; a function running the file in onnxruntime."""
    import warnings

    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ExportError(f"--format onnx needs the onnx and onnxruntime packages ({err}); install them with "
                          "pip install 'pipeline[export]' (or: pip install onnx onnxruntime)") from None
    names = [s["name"] for s in spec]
    axes = {s["name"]: {i: f"{s['name']}_{d}" if d == "T" else "batch" for i, d in enumerate(s["shape"]) if isinstance(d, str)}
            for s in spec}
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing's and the LSTM batch-size warnings: the check below runs other batch sizes and
        # lengths than the trace's, and decides. The TorchScript-based exporter is deprecated, but
        # torch.export (dynamo=True) cannot take the masked CNN's data-dependent indexing.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        try:
            torch.onnx.export(module, trace_inputs, path, input_names=names, output_names=["probabilities"],
                              dynamic_axes={**axes, "probabilities": {0: "batch"}}, dynamo=False, opset_version=17)
        except Exception as err:  # noqa: BLE001 -- any exporter failure: one line naming it
            raise ExportError(f"ONNX export failed: {str(err).strip().splitlines()[0]}") from None
    model = onnx.load(path)
    onnx.helper.set_model_props(model, {"pipeline": json.dumps(meta)})
    onnx.save(model, path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    def run(inputs: tuple) -> torch.Tensor:
        return torch.from_numpy(session.run(["probabilities"], {n: x.numpy() for n, x in zip(names, inputs)})[0])

    return run
