"""Real rows to check an exported model on, with what the bundle's model says about them.

``from_input``: the first rows of a raw input, featurized twice by predict's featurizer:
standardised (the bundle's model, as score applies it) and not (the exported model's
input). ``from_run``: the first rows of the run's test split (else val, else train) from
its dataset version; the standardisation done at prepare time is undone for the exported
model's input.
"""
from __future__ import annotations

import json

import torch

from pipeline import storage
from pipeline.manifest import read_manifest
from pipeline.predict.bundle import PredictError, ignore_readonly_arrays, model_from_bundle
from pipeline.predict.export import CheckRows, Exportable
from pipeline.schema import length_column


def _inputs(batch: dict, features: dict) -> tuple:
    """A collated batch -> the exported model's inputs, in schema order."""
    out = []
    for name, spec in features.items():
        if spec["kind"] == "categorical":
            out.append(batch[name].long())
        elif spec["kind"] == "sequence":
            out += [batch[name].float(), batch[length_column(name)].long()]
        else:
            out.append(batch[name].float())
    return tuple(out)


def _expected(bundle: dict, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model_from_bundle(bundle)(batch), dim=1)


def from_input(bundle: dict, module: Exportable, model_path: str, input_path: str, data, rows: int) -> CheckRows:
    from pipeline.data.reader import collate, decode_table
    from pipeline.predict.job import featurize_rows, read_rows

    ignore_readonly_arrays()
    data, raw, builders = read_rows(bundle, model_path, input_path, data)
    raw = raw.head(rows)
    features = bundle["schema"]["features"]
    scored, _ = featurize_rows(raw, builders, bundle, data.split.salt)
    plain, _ = featurize_rows(raw, builders, bundle, data.split.salt, standardize=False)
    if scored.num_rows == 0:
        raise PredictError(f"{input_path}: none of its first {rows} rows passes validation; give rows the model can score")
    batch = collate(decode_table(scored, features, extra=()), features)
    return CheckRows(_inputs(collate(decode_table(plain, features, extra=()), features), features), _expected(bundle, batch),
                     f"{input_path}")


def from_run(bundle: dict, module: Exportable, model_path: str, rows: int) -> CheckRows:
    from pipeline.data import ShardReader

    run_dir = storage.parent(model_path)
    report = storage.join(run_dir, "report.json")
    version = json.loads(storage.read_text(report)).get("dataset_version") if storage.exists(report) else None
    if version is None or not storage.exists(storage.join(version, "manifest.json")):
        raise PredictError(f"{model_path}: no dataset version to take check rows from ({report} names none that exists); "
                           "pass --input with a few raw rows in the training data's format")
    features = bundle["schema"]["features"]
    version_dir, manifest = read_manifest(version)  # once, for up to three readers
    for split in ("test", "val", "train"):
        reader = ShardReader(version_dir, split, 0, 1, rows, mode="eval", prefetch=0, manifest=manifest)
        batch = next(iter(reader), None)
        if batch is not None:
            break
    else:
        raise PredictError(f"{version}: every split is empty; pass --input with a few raw rows")
    inputs = list(_inputs(batch, features))
    for i, (name, spec) in enumerate(_positions(features)):
        if hasattr(module, f"{name}_mean") and bundle["featurizer"][name].get("applied_in", "prepare") == "prepare":
            x = inputs[i] * getattr(module, f"{name}_std") + getattr(module, f"{name}_mean")  # undo prepare's standardisation
            if spec["kind"] == "sequence":
                x = x * (torch.arange(x.shape[1])[None, :] < inputs[i + 1][:, None]).unsqueeze(2)
            inputs[i] = x
    return CheckRows(tuple(inputs), _expected(bundle, batch), f"{version} ({split} split)")


def _positions(features: dict) -> list:
    """(feature name, spec) at each input position (a sequence's length takes one too)."""
    out = []
    for name, spec in features.items():
        out.append((name, spec))
        if spec["kind"] == "sequence":
            out.append((length_column(name), {"kind": "length"}))
    return out
