"""The data-parallel training loop: every rank runs it with its own Collective.

Collectives (marked ``# collective``) are the only places ranks talk to each other.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.config import Config, TrainConfig
from pipeline.data import ShardReader
from pipeline.dist import Collective
from pipeline.manifest import read_manifest
from pipeline.models import build_model
from pipeline.schema import LABEL_COLUMN
from pipeline.train import run_dir as rd

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced (identical on every rank)."""

    run_dir: Path
    report: dict


def dataset_path(cfg: Config) -> Path:
    """The dataset version training reads: ``data.version`` if set, else LATEST."""
    ddir = Path(cfg.data.root) / (cfg.data.name or cfg.name)
    return ddir / cfg.data.version if cfg.data.version else ddir


def make_optimizer(cfg: TrainConfig, params, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def warmup_factor(step: int, warmup_steps: int, world_size: int) -> float:
    """Multiplier on the world-scaled lr: ramps linearly from 1/W (the unscaled lr) to 1."""
    if warmup_steps <= 0 or world_size == 1:
        return 1.0
    start = 1.0 / world_size
    return start + (1.0 - start) * min(1.0, step / warmup_steps)


class Trainer:
    """Trains ``cfg.model`` on the dataset version at ``dataset`` with ``collective``.

    Args:
        cfg: the experiment config.
        collective: this rank's engine (rank, world size, collectives).
        dataset: a dataset version (or dataset dir with LATEST); defaults from the config.
    """

    def __init__(self, cfg: Config, collective: Collective, dataset: str | Path | None = None):
        self.cfg, self.coll = cfg, collective
        self.version_dir, self.manifest = read_manifest(dataset or dataset_path(cfg))
        tc, rc = cfg.train, cfg.data.reader
        rank, size = collective.rank, collective.size
        self.train_reader = ShardReader(
            self.version_dir, "train", rank, size, tc.batch_size, seed=tc.seed, mode="train",
            remainder=rc.remainder, shuffle_buffer=rc.shuffle_buffer, prefetch=rc.prefetch, verify=rc.verify,
            bucket_by_length=rc.bucket_by_length,
        )
        self.eval_readers = {
            split: ShardReader(self.version_dir, split, rank, size, tc.batch_size, mode="eval", prefetch=rc.prefetch)
            for split in ("val", "test")
            if self.manifest["splits"][split]["rows"] > 0
        }
        # Fail before the first gradient all-reduce, not inside it: ranks must agree on
        # the data they train on and on how many steps an epoch has.
        self.coll.agree("dataset fingerprint", int(self.manifest["fingerprint"][:15], 16))  # collective
        self.steps = self.coll.agree("steps per epoch", len(self.train_reader))  # collective

        torch.manual_seed(tc.seed)
        self.model = build_model(cfg.model, self.manifest["schema"])
        self.base_lr = tc.lr * (size if tc.scale_lr else 1)
        optimizer = make_optimizer(tc, self.model.parameters(), self.base_lr)
        self.coll.broadcast_state(self.model, optimizer)  # collective
        self.optimizer = self.coll.wrap_optimizer(optimizer, self.model, cfg.dist.fp16_allreduce)
        warmup_steps = int(tc.warmup_epochs * self.steps) if tc.scale_lr else 0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_factor(step, warmup_steps, size)
        )

    def fit(self) -> TrainResult:
        cfg, coll = self.cfg, self.coll
        name = coll.broadcast_object(cfg.run.name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")  # collective
        run_dir = rd.create_run_dir(cfg, name) if coll.is_root else Path(cfg.run.root) / name
        if coll.is_root:
            log.info(
                "training %s on %s: %d ranks x %d threads, %d steps/epoch, global batch %d, lr %.4g",
                cfg.model.type, self.version_dir, coll.size, coll.threads, self.steps, cfg.train.batch_size * coll.size, self.base_lr,
            )
        history = []
        for epoch in range(cfg.train.epochs):
            record = self._train_epoch(epoch)
            coll.average_buffers(self.model)  # collective
            record.update(self._evaluate("val", prefix="val_"))
            history.append(record)
            if coll.is_root:
                rd.append_metrics(run_dir, record)
                self._checkpoint(run_dir, epoch)
                log.info(
                    "epoch %d/%d loss %.4f acc %.4f val_loss %.4f val_acc %.4f %.0f samples/s",
                    epoch + 1, cfg.train.epochs, record["train_loss"], record["train_accuracy"],
                    record["val_loss"], record["val_accuracy"], record["samples_per_sec"],
                )
        test = self._evaluate("test", prefix="test_")
        report = self._report(history, test)
        if coll.is_root:
            rd.atomic_torch_save(rd.model_bundle(self.model, cfg, self.manifest), run_dir / "model.pt")
            rd.write_report(run_dir, report)
            rd.plot_curves(run_dir, history)
        coll.barrier()  # collective: no rank returns before rank 0 has written the run
        return TrainResult(run_dir, report)

    def _train_epoch(self, epoch: int) -> dict:
        self.model.train()
        self.train_reader.set_epoch(epoch)
        sums = torch.zeros(3, dtype=torch.float64)  # loss x n, correct, seen
        waited = 0.0
        started = time.perf_counter()
        batches = iter(self.train_reader)
        progress = tqdm(total=self.steps, desc=f"epoch {epoch + 1}", disable=not (self.coll.is_root and _interactive()), leave=False)
        for _ in range(self.steps):
            t0 = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - t0
            y = batch[LABEL_COLUMN]
            logits = self.model(batch)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()  # collective: gradients averaged over ranks
            self.scheduler.step()
            n = len(y)
            sums += torch.tensor([loss.item() * n, (logits.argmax(1) == y).sum().item(), n], dtype=torch.float64)
            progress.update()
        progress.close()
        elapsed = time.perf_counter() - started
        total = self.coll.allreduce_sum(sums, name=f"train.metrics.{epoch}")  # collective
        timing = self.coll.allreduce_sum(torch.tensor([elapsed, waited], dtype=torch.float64), name=f"train.time.{epoch}")  # collective
        seen = total[2].item()
        mean_elapsed = timing[0].item() / self.coll.size
        return {
            "epoch": epoch + 1,
            "train_loss": total[0].item() / seen,
            "train_accuracy": total[1].item() / seen,
            "train_samples": int(seen),
            "epoch_seconds": mean_elapsed,
            "samples_per_sec": seen / mean_elapsed,
            "input_wait_fraction": timing[1].item() / timing[0].item(),
            "lr": self.scheduler.get_last_lr()[0],
        }

    @torch.no_grad()
    def _evaluate(self, split: str, prefix: str) -> dict:
        """Global loss and accuracy on ``split``: each rank scores its share, sums are all-reduced."""
        reader = self.eval_readers.get(split)
        if reader is None:
            return {f"{prefix}loss": math.nan, f"{prefix}accuracy": math.nan, f"{prefix}samples": 0}
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        for batch in reader:
            y = batch[LABEL_COLUMN]
            logits = self.model(batch)
            loss = F.cross_entropy(logits, y, reduction="sum")
            sums += torch.tensor([loss.item(), (logits.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64)
        total = self.coll.allreduce_sum(sums, name=f"eval.{split}")  # collective
        seen = total[2].item()
        return {f"{prefix}loss": total[0].item() / seen, f"{prefix}accuracy": total[1].item() / seen, f"{prefix}samples": int(seen)}

    def _checkpoint(self, run_dir: Path, epoch: int) -> None:
        state = {
            "format_version": rd.MODEL_FORMAT_VERSION,
            "epoch": epoch + 1,
            "world_size": self.coll.size,
            "dataset_fingerprint": self.manifest["fingerprint"],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        rd.atomic_torch_save(state, run_dir / "checkpoints" / "last.pt")

    def _report(self, history: list[dict], test: dict) -> dict:
        train_time = sum(h["epoch_seconds"] for h in history)
        return {
            "test_accuracy": test["test_accuracy"],
            "test_loss": test["test_loss"],
            "test_samples": test["test_samples"],
            "val_accuracy": history[-1]["val_accuracy"],
            "world_size": self.coll.size,
            "engine": self.coll.engine,
            "threads_per_rank": self.coll.threads,
            "epochs": len(history),
            "steps_per_epoch": self.steps,
            "global_batch_size": self.cfg.train.batch_size * self.coll.size,
            "train_samples_per_sec": sum(h["train_samples"] for h in history) / train_time,
            "train_seconds": train_time,
            "dataset_fingerprint": self.manifest["fingerprint"],
            "dataset_version": str(self.version_dir),
            "model": self.cfg.model.type,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }


def _interactive() -> bool:
    import sys

    return sys.stderr.isatty()
