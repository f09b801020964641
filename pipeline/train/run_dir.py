"""The run directory: config.yaml, metrics.jsonl, checkpoints/, model.pt, report.json, curves.png.

A directory or an object-store prefix (``run.root`` may be a URI). Only rank 0 writes
here, and every file is written as one complete object (:func:`pipeline.storage.open_output`):
a reader sees the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import time

import torch

from pipeline import storage
from pipeline.config import Config, to_yaml

MODEL_FORMAT_VERSION = 1


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked."""


OWNER_NAME = ".run"


def default_run_name(experiment: str) -> str:
    """``<experiment>-<UTC time>-<4 random hex>``: two runs started in the same second
    still get two directories."""
    return f"{experiment}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def create_run_dir(cfg: Config, name: str, explicit: bool = True) -> str:
    """Claim ``<run.root>/<name>/`` for this run (exclusively: a run directory is never
    shared) and write the resolved config into it.

    Raises:
        RunDirError: another run holds it (or held it: use ``--resume`` to continue that one).
    """
    run_dir = storage.join(cfg.run.root, name)
    claim = json.dumps({"name": name, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
    if not storage.create_exclusive(storage.join(run_dir, OWNER_NAME), claim.encode()):
        hint = "choose another run.name, or add --resume to continue that run" if explicit else "start it again"
        raise RunDirError(f"run directory {run_dir} belongs to another run; {hint}")
    storage.make_dirs(storage.join(run_dir, "checkpoints"))
    storage.write_text(storage.join(run_dir, "config.yaml"), to_yaml(cfg))
    return run_dir


def write_metrics(run_dir: str, history: list[dict]) -> None:
    """metrics.jsonl: one line per finished epoch, rewritten whole from the training
    history (object stores cannot append; and after a resume or an elastic roll-back the
    history, not the file, says which epochs count)."""
    storage.write_text(storage.join(run_dir, "metrics.jsonl"), "".join(json.dumps(record) + "\n" for record in history))


def atomic_torch_save(obj: dict, location: str) -> None:
    """``torch.save`` to ``location`` as one complete object."""
    with storage.open_output(location) as f:
        torch.save(obj, f)


def write_report(run_dir: str, report: dict) -> None:
    storage.write_text(storage.join(run_dir, "report.json"), json.dumps(report, indent=2) + "\n")


# The data sections that say how raw input was read (source type, csv header and delimiter,
# label, tensor/table columns, image size, series options, the row id's salt).
BUNDLE_DATA_SECTIONS = ("source", "tensor", "table", "image", "sequence", "split")


def model_bundle(model: torch.nn.Module, cfg: Config, manifest: dict) -> dict:
    """What scoring needs to rebuild and apply the model: weights, sizes, featurizer, and
    how the training input was read (``data``: ``predict`` reads new input the same way
    without the config; bundles written before it lack the key).

    Plain types and tensors only, so it loads with ``torch.load(weights_only=True)``.
    """
    from dataclasses import asdict

    return {
        "format_version": MODEL_FORMAT_VERSION,
        "model": asdict(cfg.model),
        "schema": manifest["schema"],
        "featurizer": manifest["featurizer"],
        "dataset_fingerprint": manifest["fingerprint"],
        "data": {k: v for k, v in asdict(cfg.data).items() if k in BUNDLE_DATA_SECTIONS},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def plot_curves(run_dir: str, history: list[dict]) -> None:
    """Loss and accuracy per epoch as curves.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], label="val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with storage.open_output(storage.join(run_dir, "curves.png")) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
