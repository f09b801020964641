"""The run directory: config.yaml, metrics.jsonl, checkpoints/, model.pt, report.json, curves.png.

Only rank 0 writes here; every file that a reader may see half-written is written to a
temporary name and renamed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from pipeline.config import Config, to_yaml
from pipeline.manifest import atomic_write_text

MODEL_FORMAT_VERSION = 1


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked."""


def create_run_dir(cfg: Config, name: str) -> Path:
    """Create ``<run.root>/<name>/`` and write the resolved config into it."""
    run_dir = Path(cfg.run.root) / name
    if (run_dir / "report.json").exists() or (run_dir / "metrics.jsonl").exists():
        raise RunDirError(f"run directory {run_dir} already holds a run; choose another run.name")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    return run_dir


def metrics_line(record: dict) -> str:
    return json.dumps(record) + "\n"


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(metrics_line(record))


def rewrite_metrics(run_dir: Path, lines: list[str]) -> None:
    """Replace metrics.jsonl (on resume: keep only the epochs the checkpoint holds)."""
    atomic_write_text(run_dir / "metrics.jsonl", "".join(lines))


def atomic_torch_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_report(run_dir: Path, report: dict) -> None:
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2) + "\n")


def model_bundle(model: torch.nn.Module, cfg: Config, manifest: dict) -> dict:
    """What scoring needs to rebuild and apply the model: weights, sizes, featurizer.

    Plain types and tensors only, so it loads with ``torch.load(weights_only=True)``.
    """
    from dataclasses import asdict

    return {
        "format_version": MODEL_FORMAT_VERSION,
        "model": asdict(cfg.model),
        "schema": manifest["schema"],
        "featurizer": manifest["featurizer"],
        "dataset_fingerprint": manifest["fingerprint"],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def plot_curves(run_dir: Path, history: list[dict]) -> None:
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
    fig.savefig(run_dir / "curves.png", dpi=100)
    plt.close(fig)
