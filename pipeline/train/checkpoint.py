"""Training checkpoints: versioned dicts of plain types and tensors, written by rank 0 as
one complete object each (local disk or object store) and loaded with
``torch.load(weights_only=True)`` (no code runs from a file).

Files are ``checkpoints/step-<global step>.pt``; the newest ``keep`` are kept. Resuming
takes the newest one that loads, so a file cut short by a crash is skipped, not fatal.
"""
from __future__ import annotations

import io
import logging
import re

import torch

from pipeline import storage
from pipeline.train.run_dir import atomic_torch_save

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"step-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one made for another dataset or model."""


def checkpoint_entries(run_dir: str) -> list[storage.Entry]:
    """Checkpoint files in ``run_dir``, newest (highest step) first, with sizes and mtimes."""
    found = [(int(m.group(1)), e) for e in storage.list_files(storage.join(run_dir, "checkpoints"), recursive=False)
             if (m := _NAME.search(storage.basename(e.uri)))]
    return [e for _, e in sorted(found, key=lambda pair: pair[0], reverse=True)]


def checkpoint_files(run_dir: str) -> list[str]:
    """Checkpoint locations in ``run_dir``, newest (highest step) first."""
    return [e.uri for e in checkpoint_entries(run_dir)]


def save_checkpoint(run_dir: str, state: dict, keep: int) -> str:
    """Write ``state`` as ``step-<state['global_step']>.pt`` and prune older files."""
    path = storage.join(run_dir, "checkpoints", f"step-{state['global_step']:09d}.pt")
    atomic_torch_save({"format_version": FORMAT_VERSION, **state}, path)
    for old in checkpoint_files(run_dir)[keep:]:
        storage.delete(old)
    return path


UNREADABLE_SUFFIX = ".unreadable"


def load_latest(run_dir: str) -> tuple[str, dict, list[str]]:
    """The newest checkpoint of ``run_dir`` that loads: ``(path, state, set_aside)``.

    Newer files that do not load (cut short by a crash, a full disk) are reported and
    renamed ``step-N.pt.unreadable``: kept for a look, and out of the way of pruning, which
    would otherwise count them among the newest and delete the good one resumed from.

    Raises:
        CheckpointError: none there, or none readable.
    """
    files = checkpoint_files(run_dir)
    if not files:
        raise CheckpointError(f"{run_dir}/checkpoints has no step-*.pt checkpoint to resume from; start a new run without --resume")
    unreadable = []
    for path in files:
        try:
            state = torch.load(io.BytesIO(storage.read_bytes(path)), map_location="cpu", weights_only=True)
        except storage.StorageError:
            raise
        except Exception as err:  # noqa: BLE001 -- any unreadable file: fall back to an older one
            log.warning("%s: not a readable checkpoint (%s); set aside as %s, trying an older one", path,
                        str(err).splitlines()[0], storage.basename(path) + UNREADABLE_SUFFIX)
            unreadable.append(path)
            continue
        if state.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format {state.get('format_version')!r}, this version reads {FORMAT_VERSION}")
        for bad in unreadable:
            storage.move(bad, bad + UNREADABLE_SUFFIX)
        return path, state, unreadable
    raise CheckpointError(f"no readable checkpoint in {run_dir}/checkpoints (tried {len(files)}: {', '.join(map(storage.basename, files))}); "
                          "start a new run without --resume")


# Settings a resumed run may change that live in the optimizer's parameter groups (the
# others are read from the config at every step); its moments carry over either way.
_OPTIMIZER_OPTIONS = ("weight_decay", "momentum")


def apply_changed_settings(path: str, saved: dict, now, optimizer: torch.optim.Optimizer) -> list[str]:
    """After loading a checkpoint's optimizer state, make the current config's settings the
    ones in force, and say so for each that changed. Returns those messages.

    Raises:
        CheckpointError: another optimizer type (its state cannot carry over).
    """
    if saved.get("optimizer") != now.optimizer:
        raise CheckpointError(f"{path} was trained with train.optimizer={saved.get('optimizer')}, this run has "
                              f"{now.optimizer}: its state cannot carry over; resume with train.optimizer={saved.get('optimizer')}, "
                              "or start a new run")
    said = []
    for key in ("lr", "scale_lr", "warmup_epochs", "schedule", "momentum", "weight_decay", "batch_size", "accumulate_steps"):
        before, after = saved.get(key), getattr(now, key)
        if before == after:
            continue
        said.append(f"train.{key} was {before} in {storage.basename(path)}, now {after}: the new value applies from here "
                    "(the optimizer's moments carry over)")
        log.warning("resume: %s", said[-1])
        if key in _OPTIMIZER_OPTIONS:
            for group in optimizer.param_groups:
                if key in group:
                    group[key] = after
    return said


def model_signature(model: torch.nn.Module) -> dict[str, list[int]]:
    """Parameter and buffer names with their shapes: what a checkpoint must match."""
    return {name: list(t.shape) for name, t in model.state_dict().items()}


def check_compatible(path: str, state: dict, fingerprint: str, model: torch.nn.Module) -> None:
    """Refuse a checkpoint made for another dataset version or another model shape."""
    if state["dataset_fingerprint"] != fingerprint:
        raise CheckpointError(
            f"{path} was trained on dataset {state['dataset_fingerprint'][:12]}, this run reads {fingerprint[:12]}; "
            "resume with the same data.version, or start a new run"
        )
    mine, theirs = model_signature(model), state["model_signature"]
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise CheckpointError(
            f"{path} holds a different model ({', '.join(f'{k}: {theirs.get(k)} vs {mine.get(k)}' for k in diff[:3])}); "
            "resume with the run's own model settings (its config.yaml), or start a new run"
        )
