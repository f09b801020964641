"""The data-parallel training loop: every rank runs it with its own Collective.

Collectives (marked ``# collective``) are the only places ranks talk to each other; every
rank reaches each of them in the same order, because the number of steps per epoch is
agreed before the first one.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import socket
import time
from dataclasses import asdict, dataclass
import psutil
import torch
import torch.nn.functional as F

from pipeline import storage
from pipeline.config import Config, to_dict, with_absolute_locations
from pipeline.data import ShardReader
from pipeline.data.cache import ShardCache
from pipeline.engines import Collective
from pipeline.engines.base import RankFailure
from pipeline.engines.device import autocast, check_precision, grad_scaler, to_device
from pipeline.manifest import read_manifest
from pipeline.models import build_model
from pipeline.schema import LABEL_COLUMN, ROW_ID_COLUMN
from pipeline.train import checkpoint as ckpt
from pipeline.train import records
from pipeline.train import run_dir as rd
from pipeline.train.preemption import Preempted, PreemptionWatch
from pipeline.train.progress import progress_display
from pipeline.train.schedule import learning_rate, reference_batch, set_learning_rate
from pipeline.train.state import Progress, dataset_path, find_run_to_resume, float_buffers, make_optimizer, mean_buffers
from pipeline.train.tracking import NoTracking, open_tracking
from pipeline.train.watchdog import Watchdog

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced (identical on every rank)."""

    run_dir: str
    report: dict


class Trainer:
    """Trains ``cfg.model`` on the dataset version at ``dataset`` with ``collective``.

    Args:
        cfg: the experiment config.
        collective: this rank's engine (rank, world size, collectives).
        dataset: a dataset version (or dataset dir with LATEST); defaults from the config.
        preemption: the rank's pre-emption watch, when its entry point installed one before
            the rendezvous; else :meth:`fit` installs its own for the run.
    """

    def __init__(self, cfg: Config, collective: Collective, dataset: str | None = None,
                 preemption: PreemptionWatch | None = None):
        self.coll, self.watchdog, self.preemption = collective, None, preemption
        with self._agreed():
            self.cfg = cfg = with_absolute_locations(cfg)
            self.version_dir, self.manifest = read_manifest(dataset or dataset_path(cfg))
            self.fingerprint = self.manifest["fingerprint"]
            self.device, self.precision = collective.device, cfg.train.precision
            check_precision(self.precision, self.device)
            torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank (rank 0's win anyway)
            self.model = build_model(cfg.model, self.manifest["schema"], self.manifest["featurizer"])
            if cfg.model.sync_batch_norm:
                self.model = collective.synchronize_batch_norm(self.model)
            self.model.to(self.device)  # before the optimizer: its state lives beside the parameters
            self.optimizer = make_optimizer(cfg.train, self.model.parameters(), cfg.train.lr)
            self.scaler = grad_scaler(self.precision, self.device)
        # Every rank on the same kind of device: a mixed job would disagree on what to gather.
        collective.agree("train.device is a GPU (1) or the CPU (0)", int(self.device.type == "cuda"))  # collective
        self.first_step_at: float | None = None  # wall clock of this process's first step (startup cost)
        self.unreadable_checkpoints: list[str] = []
        self.reference_batch = reference_batch(self.cfg.train)  # a resume takes the run's own
        self._resumed_buffers: dict | None = None
        self._overflow_streak = 0  # fp16 steps in a row the loss scaler skipped
        self._nonfinite_loss = False  # this rank's loss was NaN/inf in the current optimizer step
        self._keep_scale: float | None = None  # fp16: the scale to restore after a step skipped for bad rows
        self.compute_dtype: str | None = None  # what the forward pass really computed in (the logits' dtype)
        # With peers, a rank that stops making progress ends itself (and so the job).
        self.watchdog = Watchdog(1.5 * cfg.dist.timeout_s, collective.rank) if collective.size > 1 else None
        self._build_readers()

    @contextlib.contextmanager
    def _agreed(self):
        """Run the block on every rank, then an agreement point: if it failed on any rank,
        every rank stops here with that rank's error (see ``Collective.settle``) instead of
        waiting for it in a later collective."""
        error = None
        self._beat()
        try:
            yield
        except Exception as err:  # noqa: BLE001 -- handed to settle, which raises on every rank
            if self.coll.passes_through(err):
                raise
            error = err
        self.coll.settle(error)  # collective
        self._beat()

    def _beat(self) -> None:
        if self.watchdog is not None:
            self.watchdog.beat()

    def _build_readers(self) -> None:
        """Readers for this rank and world size (rebuilt after an elastic reset)."""
        with self._agreed():
            self._make_readers()
        # Fail before the first gradient all-reduce, not inside it.
        self.coll.agree("dataset fingerprint", int(self.fingerprint[:15], 16))  # collective

    def _make_readers(self) -> None:
        tc, rc = self.cfg.train, self.cfg.data.reader
        rank, size = self.coll.rank, self.coll.size
        cache = ShardCache(rc.cache_dir, rc.cache_max_bytes) if rc.cache_dir else None
        pin = self.device.type == "cuda"  # batches in page-locked memory: the copy to the GPU runs asynchronously
        # A GPU rank's cores have nothing to do but decode: its share of them, in parallel.
        threads = rc.decode_threads if rc.decode_threads is not None else (self.coll.threads if pin else 0)
        self.train_reader = ShardReader(
            self.version_dir, "train", rank, size, tc.batch_size, seed=tc.seed, mode="train",
            remainder=rc.remainder, shuffle_buffer=rc.shuffle_buffer, prefetch=rc.prefetch, verify=rc.verify,
            bucket_by_length=rc.bucket_by_length, layout=rc.layout, cache=cache, readahead=rc.readahead,
            page_checksums=rc.page_checksums, pin_memory=pin, decode_threads=threads, manifest=self.manifest,
        )
        self.eval_readers = {
            split: ShardReader(self.version_dir, split, rank, size, tc.batch_size, mode="eval", prefetch=rc.prefetch,
                               verify=rc.verify, cache=cache, readahead=rc.readahead, page_checksums=rc.page_checksums,
                               pin_memory=pin, decode_threads=threads, manifest=self.manifest)
            for split in ("val", "test")
            if self.manifest["splits"][split]["rows"] > 0
        }
        self.steps_per_epoch = len(self.train_reader)  # a whole epoch on this world size

    def fit(self, resume: bool = False) -> TrainResult:
        """Train (from the latest checkpoint of the run when ``resume``), evaluate on test,
        write the run directory on rank 0."""
        own = self.preemption is None  # else the rank's entry point installed it before the rendezvous
        if own:
            self.preemption = PreemptionWatch(self.cfg.train.preemption_check_steps)
        self.tracking = NoTracking()
        try:
            return self._fit(resume)
        except BaseException as err:
            self.tracking.stop("KILLED" if isinstance(err, Preempted) else "FAILED")
            raise
        finally:
            if own:
                self.preemption.close()
            if self.watchdog is not None:
                self.watchdog.close()

    def _fit(self, resume: bool) -> TrainResult:
        cfg, coll = self.cfg, self.coll
        progress, resumed_from = Progress(), None
        if resume:
            with self._agreed():
                found = find_run_to_resume(cfg) if coll.is_root else None
            self.run_dir = coll.broadcast_object(found, "run_dir")  # collective
            progress, resumed_from = self._resume()
            with self._agreed():
                if coll.is_root:
                    records.record_start(self.run_dir, resume=True, world_size=coll.size)
        else:
            name = coll.broadcast_object(cfg.run.name or rd.default_run_name(cfg.name), "run_name")  # collective
            with self._agreed():
                self.run_dir = rd.create_run_dir(cfg, name, explicit=bool(cfg.run.name)) if coll.is_root else storage.join(cfg.run.root, name)
                if coll.is_root:
                    records.record_start(self.run_dir, resume=False, world_size=coll.size)
        if coll.is_root:
            self.tracking = open_tracking(cfg, self.run_dir, resume)
        coll.broadcast_state(self.model, self.optimizer, with_optimizer=resume)  # collective
        if resume and self._resumed_buffers:  # this rank's own statistics, after rank 0's were broadcast
            self.model.load_state_dict(self._resumed_buffers, strict=False)
        self.train_model = coll.wrap_model(self.model, cfg.dist.fp16_allreduce)
        self.optimizer = coll.wrap_optimizer(self.optimizer, self.model, cfg.dist.fp16_allreduce, cfg.train.accumulate_steps)
        if coll.is_root:
            log.info(
                "training %s on %s: %d %s ranks x %d threads on %s (%s), %d steps/epoch, global batch %d%s",
                cfg.model.type, self.version_dir, coll.size, coll.engine, coll.threads, self.device, self.precision,
                self.steps_per_epoch,
                cfg.train.batch_size * coll.size, f", resumed from {resumed_from}" if resumed_from else "",
            )
        if cfg.dist.elastic:
            progress = coll.run_elastic(self._train, self.model, self.optimizer, on_reset=self._beat, **asdict(progress))
        else:
            progress = self._train(progress)
        if cfg.train.restore_best and progress.best_state is not None and progress.best_epoch != len(progress.history):
            self.model.load_state_dict(progress.best_state)  # the best epoch's weights go to test and model.pt
            if coll.is_root:
                log.info("restoring the weights of epoch %d (best %s %.4f)", progress.best_epoch,
                         cfg.train.early_stopping_metric, progress.best)
        test = self._evaluate("test", prefix="test_")
        hosts = coll.allgather_object(socket.gethostname(), "hosts")  # collective: where each rank ran
        report = self._report(progress, test, resumed_from, hosts)
        with self._agreed():  # no rank returns before rank 0 has written the run (or failed to)
            if coll.is_root:
                rd.atomic_torch_save(rd.model_bundle(self.model, cfg, self.manifest), storage.join(self.run_dir, "model.pt"))
                rd.write_metrics(self.run_dir, progress.history)  # all of it, whatever resets happened
                rd.write_report(self.run_dir, report)
                rd.plot_curves(self.run_dir, progress.history)
        self.tracking.finish(self.run_dir, self.model, self.manifest["schema"])
        return TrainResult(self.run_dir, report)

    def _train(self, st) -> Progress:
        """Epochs from ``st`` to the end (or early stop). ``st`` is a Progress, or Horovod's
        elastic state carrying the same fields; it is re-entered after an elastic reset."""
        if self.train_reader.world_size != self.coll.size or self.train_reader.rank != self.coll.rank:
            self._build_readers()
        tc = self.cfg.train
        while st.epoch < tc.epochs and not st.stopped:
            reader = self.train_reader
            if st.reader is not None:
                reader.load_state_dict(st.reader)
            else:
                reader.set_epoch(st.epoch)
            steps = self.coll.agree("steps this epoch", len(reader))  # collective
            self._train_epoch(st, reader, steps)
            self.coll.average_buffers(self.model)  # collective
            record = self._epoch_record(st)
            record.update(self._evaluate("val", prefix="val_"))
            st.history = [*st.history, record]
            self.tracking.log_epoch(record)
            self._early_stopping(st, record)
            st.epoch, st.reader = st.epoch + 1, None
            st.sums, st.seconds, st.waited, st.stepping = [0.0, 0.0, 0.0], 0.0, 0.0, 0.0
            st.commit()  # collective in elastic mode
            self._save_checkpoint(st, metrics=True)  # collective (gathers RNG states)
            if st.epoch < tc.epochs and not st.stopped and self.preemption.check_steps and self._preemption_agreed(st, "epoch"):
                raise self._preempted(st, f"after epoch {st.epoch}")
            if self.coll.is_root:
                log.info(
                    "epoch %d/%d loss %.4f acc %.4f val_loss %.4f val_acc %.4f lr %.3g %.0f samples/s",
                    record["epoch"], tc.epochs, record["train_loss"], record["train_accuracy"],
                    record["val_loss"], record["val_accuracy"], record["lr"], record["samples_per_sec"],
                )
        return Progress(**Progress.fields_of(st))

    def _train_epoch(self, st, reader: ShardReader, steps: int) -> None:
        """``steps`` batches (the rest of this epoch) from ``reader``, folded into ``st``."""
        tc, coll = self.cfg.train, self.coll
        self.model.train()
        accumulate = tc.accumulate_steps
        consumed = reader.state_dict()["samples_consumed"]  # before this segment of the epoch
        per_batch = tc.batch_size * coll.size
        local = torch.zeros(3, dtype=torch.float64)  # loss x n, correct, seen (this rank, since last fold)
        clock = {"start": time.perf_counter(), "waited": 0.0, "stepping": 0.0}
        batches = iter(reader)
        bar = progress_display(coll.is_root, tc.progress_every_s, st.epoch, tc.epochs, steps, self.steps_per_epoch, per_batch)
        for i in range(steps):
            t0 = time.perf_counter()
            batch = to_device(next(batches), self.device)
            self._beat()
            clock["waited"] += time.perf_counter() - t0
            group_start = i - i % accumulate
            group = min(accumulate, steps - group_start)
            last_in_group = i == group_start + group - 1
            y = batch[LABEL_COLUMN]
            with contextlib.nullcontext() if last_in_group else coll.no_sync(self.train_model):
                with autocast(self.precision, self.device):
                    logits = self.train_model(batch)
                    loss = F.cross_entropy(logits, y)
                self.compute_dtype = self.compute_dtype or str(logits.dtype).removeprefix("torch.")
                scaled = loss / group
                (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
            value = loss.item()
            if math.isfinite(value):
                local += torch.tensor([value * len(y), (logits.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64)
            else:  # this rank's rows behind it; the step's fate is decided on the averaged gradients
                self._nonfinite_loss = True
                log.warning("rank %d: loss %s at global step %d (epoch %d, batch %d of %d), rows %s", coll.rank, value,
                            st.global_step + 1, st.epoch + 1, i + 1, steps, batch[ROW_ID_COLUMN][:16].tolist())
            bar.update()
            if not last_in_group:
                continue
            progress = st.epoch + (consumed + (i + 1 - group) * per_batch) / reader.total_rows
            set_learning_rate(self.optimizer, learning_rate(tc, coll.size, progress, self.reference_batch))
            t0 = time.perf_counter()
            coll.step(self.optimizer, functools.partial(self._check_gradients, st, i, steps), self.scaler)  # collective: gradients averaged
            if self._keep_scale is not None:  # skipped for bad rows, not for the scale: the scale stays
                self.scaler.update(new_scale=self._keep_scale)
                self._keep_scale = None
            self._nonfinite_loss = False
            self._beat()
            clock["stepping"] += time.perf_counter() - t0
            self.optimizer.zero_grad()
            st.global_step += 1
            if self.first_step_at is None:
                self.first_step_at = time.time()
            if self.preemption.due(st.global_step) and i + 1 < steps and self._preemption_agreed(st, "step"):
                self._fold(st, local, clock)
                st.reader = reader.state_dict()
                self._save_checkpoint(st)  # collective
                raise self._preempted(st, f"in epoch {st.epoch + 1}, {i + 1} of {steps} batches")
            commit = self.cfg.dist.elastic and st.global_step % self.cfg.dist.commit_every_steps == 0
            save = tc.checkpoint_every_steps and st.global_step % tc.checkpoint_every_steps == 0
            if (commit or save) and i + 1 < steps:
                self._fold(st, local, clock)
                st.reader = reader.state_dict()
                if commit:
                    st.commit()  # collective
                if save:
                    self._save_checkpoint(st)  # collective
        bar.close()
        self._fold(st, local, clock)

    def _preemption_agreed(self, st, where: str) -> bool:
        """Whether any rank got the pre-emption warning (collective; see
        :mod:`pipeline.train.preemption`)."""
        flag = torch.tensor([float(self.preemption.requested)], dtype=torch.float64)
        warned = int(self.coll.allreduce_sum(flag, name=f"train.preemption.{where}").item())  # collective
        if warned and self.coll.is_root:
            log.warning("pre-emption warning (SIGUSR1) on %d of %d ranks: saving a checkpoint at global step %d and stopping",
                        warned, self.coll.size, st.global_step)
        return warned > 0

    def _preempted(self, st, where: str) -> Preempted:
        return Preempted(f"preempted: checkpoint saved at global step {st.global_step} ({where}) in {self.run_dir}; "
                         "run the same command with --resume (same run.name) to continue from it")

    def _check_gradients(self, st, batch: int, steps: int) -> bool:
        """On the averaged gradients (identical on every rank, so every rank decides alike):
        clip them (``train.grad_clip``), and refuse to apply them unless they are finite:
        stop with the step named, or skip the batch when ``train.skip_nonfinite``."""
        tc = self.cfg.train
        params = [p for p in self.model.parameters() if p.grad is not None]
        if tc.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in params]))
        if torch.isfinite(norm):
            self._overflow_streak = 0
            return True
        if self.scaler is not None:
            # Every rank is here (the same averaged gradients): did any rank's loss itself
            # go non-finite (bad rows: the scale is not to blame), or only the gradients
            # (an fp16 overflow at this scale: the scaler skips the step and halves it)?
            flag = torch.tensor([float(self._nonfinite_loss)], dtype=torch.float64)
            bad_rows = self.coll.allreduce_sum(flag, name="train.nonfinite_loss")[0].item() > 0  # collective
            if not bad_rows and not self._scaler_gave_up():
                st.overflow_steps = st.overflow_steps + 1
                return False
            if bad_rows:
                self._keep_scale = self.scaler.get_scale()
        if tc.skip_nonfinite:
            st.skipped = st.skipped + 1
            return False
        raise RankFailure(
            f"training stopped at global step {st.global_step + 1} (epoch {st.epoch + 1}, batch {batch + 1} of {steps}): the "
            "gradients are not finite (NaN or inf; a warning above names the rows whose loss was not); lower train.lr, "
            "check those rows, or set train.skip_nonfinite=true to skip such batches", quiet=not self.coll.is_root)

    MAX_OVERFLOWS = 30  # consecutive fp16 overflows: the scale has fallen 2^30-fold, the gradients are not finite

    def _scaler_gave_up(self) -> bool:
        """An overflow is the loss scaler's business (it lowers the scale and the step is
        skipped) until so many in a row that no scale helps: then it is non-finite gradients."""
        self._overflow_streak += 1
        return self._overflow_streak > self.MAX_OVERFLOWS

    def _fold(self, st, local: torch.Tensor, clock: dict) -> None:
        """Add this rank's metric sums and time since the last fold into ``st`` (global)."""
        now = time.perf_counter()
        times = [now - clock["start"], clock["waited"], clock["stepping"]]
        values = torch.cat([local, torch.tensor(times, dtype=torch.float64)])
        total = self.coll.allreduce_sum(values, name="train.fold")  # collective
        st.sums = [a + b for a, b in zip(st.sums, total[:3].tolist())]
        st.seconds += total[3].item() / self.coll.size
        st.waited += total[4].item() / self.coll.size
        st.stepping += total[5].item() / self.coll.size
        local.zero_()
        clock.update(start=now, waited=0.0, stepping=0.0)

    def _epoch_record(self, st) -> dict:
        loss, correct, seen = st.sums
        return {
            "epoch": st.epoch + 1,
            "train_loss": loss / seen,
            "train_accuracy": correct / seen,
            "train_samples": int(seen),
            "epoch_seconds": st.seconds,
            "samples_per_sec": seen / st.seconds,
            "input_wait_fraction": st.waited / st.seconds,
            "optimizer_step_seconds": st.stepping,
            "lr": self.optimizer.param_groups[0]["lr"],
            "world_size": self.coll.size,
            "global_step": st.global_step,
        }

    def _early_stopping(self, st, record: dict) -> None:
        """Track the best epoch by ``early_stopping_metric`` (its weights too, when
        ``restore_best``) and stop after ``early_stopping_patience`` epochs without one."""
        tc = self.cfg.train
        value = record[tc.early_stopping_metric]
        if math.isnan(value):
            return
        sign = 1.0 if tc.early_stopping_metric == "val_loss" else -1.0  # lower is better after sign
        if st.best is None or sign * value < sign * st.best - tc.early_stopping_min_delta:
            st.best, st.bad_epochs, st.best_epoch = value, 0, record["epoch"]
            if tc.restore_best:  # buffers are averaged at epoch ends: every rank holds the same copy
                st.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            return
        st.bad_epochs += 1
        if tc.early_stopping_patience and st.bad_epochs >= tc.early_stopping_patience:
            st.stopped = True
            if self.coll.is_root:
                log.info("early stopping after epoch %d: %s has not improved on %.4f for %d epochs",
                         record["epoch"], tc.early_stopping_metric, st.best, st.bad_epochs)

    @torch.no_grad()
    def _evaluate(self, split: str, prefix: str) -> dict:
        """Global loss and accuracy on ``split``: each rank scores its share, sums are all-reduced."""
        reader = self.eval_readers.get(split)
        if reader is None:
            return {f"{prefix}loss": math.nan, f"{prefix}accuracy": math.nan, f"{prefix}samples": 0}
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        for batch in reader:
            self._beat()
            batch = to_device(batch, self.device)
            y = batch[LABEL_COLUMN]
            with autocast(self.precision, self.device):
                logits = self.model(batch)
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            sums += torch.tensor([loss.item(), (logits.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64)
        total = self.coll.allreduce_sum(sums, name=f"eval.{split}")  # collective
        seen = total[2].item()
        return {f"{prefix}loss": total[0].item() / seen, f"{prefix}accuracy": total[1].item() / seen, f"{prefix}samples": int(seen)}

    def _save_checkpoint(self, st, metrics: bool = False) -> None:
        """Rank 0 writes model, optimizer, progress (with the reader state), every rank's RNG
        state, config, dataset fingerprint and world size as one object (and metrics.jsonl
        when ``metrics``); every rank learns whether that worked."""
        rng = self.coll.allgather_object(torch.get_rng_state(), "rng")  # collective
        # On a GPU, dropout draws from the device's generator: its state too, per rank.
        cuda_rng = self.coll.allgather_object(torch.cuda.get_rng_state(self.device), "cuda_rng") if self.device.type == "cuda" else None  # collective
        # Every rank's batch-norm statistics (they differ between ranks mid-epoch), so a
        # resume on the same world size restores each rank's own: exact, also with batch norm.
        buffers = self.coll.allgather_object(float_buffers(self.model), "buffers")  # collective
        with self._agreed():
            if self.coll.is_root:
                self._write_checkpoint(st, rng, buffers, cuda_rng)
                if metrics:
                    rd.write_metrics(self.run_dir, st.history)

    def _write_checkpoint(self, st, rng: list, buffers: list, cuda_rng: list | None) -> None:
        state = {
            "global_step": st.global_step,
            "world_size": self.coll.size,
            "dataset_fingerprint": self.fingerprint,
            "model_signature": ckpt.model_signature(self.model),
            "config": to_dict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"kind": self.cfg.train.schedule, "lr": self.optimizer.param_groups[0]["lr"],
                          "reference_batch": self.reference_batch},
            "progress": Progress.fields_of(st),
            "rng": rng,
            "rank_buffers": buffers,
            "precision": self.precision,
        }
        if cuda_rng is not None:
            state["cuda_rng"] = cuda_rng
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        ckpt.save_checkpoint(self.run_dir, state, self.cfg.train.keep_checkpoints)

    def _resume(self) -> tuple[Progress, str]:
        """Rank 0 loads the latest checkpoint into model and optimizer (broadcast after);
        every rank gets the progress and its RNG state."""
        coll = self.coll
        meta = None
        with self._agreed():
            if coll.is_root:
                path, state, self.unreadable_checkpoints = ckpt.load_latest(self.run_dir)
                ckpt.check_compatible(path, state, self.fingerprint, self.model)
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
                ckpt.apply_changed_settings(path, state["config"]["train"], self.cfg.train, self.optimizer)
                meta = {"path": path, "progress": state["progress"], "rng": state["rng"], "world_size": state["world_size"],
                        "cuda_rng": state.get("cuda_rng"), "scaler": state.get("scaler"),
                        "reference_batch": self.cfg.train.reference_batch or state["scheduler"].get("reference_batch"),
                        "rank_buffers": state.get("rank_buffers")}
                # Epochs after the checkpoint will be trained again: their metric lines go.
                rd.write_metrics(self.run_dir, state["progress"]["history"])
        meta = coll.broadcast_object(meta, "checkpoint")  # collective
        self.reference_batch = meta["reference_batch"] or self.reference_batch
        self._resumed_buffers = meta["rank_buffers"] and (
            meta["rank_buffers"][coll.rank] if meta["world_size"] == coll.size else mean_buffers(meta["rank_buffers"]))
        if self.scaler is not None and meta["scaler"]:
            self.scaler.load_state_dict(meta["scaler"])  # fp16: go on at the scale the run had reached
        if meta["world_size"] == coll.size:
            torch.set_rng_state(meta["rng"][coll.rank])
            if self.device.type == "cuda" and meta["cuda_rng"]:
                torch.cuda.set_rng_state(meta["cuda_rng"][coll.rank], self.device)
        else:  # a new world: fresh, distinct streams per rank (torch.manual_seed seeds the GPUs too)
            torch.manual_seed(self.cfg.train.seed * 1_000_003 + coll.rank * 7919 + meta["progress"]["global_step"])
        progress = Progress(**meta["progress"])
        if coll.is_root:
            log.info("resuming %s at epoch %d, step %d (saved by %d ranks, now %d)", meta["path"],
                     progress.epoch + 1, progress.global_step, meta["world_size"], coll.size)
        return progress, meta["path"]

    def _kept_epoch(self, st) -> int:
        """The epoch whose weights end up in model.pt (1-based)."""
        return st.best_epoch if self.cfg.train.restore_best and st.best_epoch else len(st.history)

    def _report(self, st: Progress, test: dict, resumed_from: str | None, hosts: list[str]) -> dict:
        history = st.history
        train_time = sum(h["epoch_seconds"] for h in history)
        return {
            "test_accuracy": test["test_accuracy"],
            "test_loss": test["test_loss"],
            "test_samples": test["test_samples"],
            "val_accuracy": history[self._kept_epoch(st) - 1]["val_accuracy"] if history else math.nan,
            "world_size": self.coll.size,
            "hosts": hosts,  # by rank
            "engine": self.coll.engine,
            "threads_per_rank": self.coll.threads,
            "device": self.device.type,
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "precision": self.precision,
            "compute_dtype": self.compute_dtype,
            "fp16_overflow_steps": st.overflow_steps,  # fp16: steps the loss scaler skipped
            "epochs": len(history),
            "early_stopped": st.stopped,
            "best_epoch": self._kept_epoch(st),  # the epoch whose weights model.pt holds
            "global_steps": st.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "global_batch_size": self.cfg.train.batch_size * self.coll.size * self.cfg.train.accumulate_steps,
            "reference_batch": self.reference_batch,
            "train_samples_per_sec": sum(h["train_samples"] for h in history) / train_time if train_time else math.nan,
            "train_seconds": train_time,
            "dataset_fingerprint": self.fingerprint,
            "dataset_version": self.version_dir,
            "model": self.cfg.model.type,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "resumed_from": resumed_from,
            "unreadable_checkpoints": self.unreadable_checkpoints,  # skipped (set aside) on resume
            "skipped_nonfinite_batches": st.skipped,
            # wall clock (unix seconds) when this process finished its first step: launch overhead
            "first_step_at": self.first_step_at,
            # ... and when it started: before it, the launcher's share; after it, the rank's own
            "process_started_at": psutil.Process().create_time(),
        }
