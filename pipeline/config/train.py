"""The ``train`` section: optimisation, schedule, checkpoints, device and precision."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class TrainConfig:
    """Optimisation. ``batch_size`` is per rank; the global batch is batch_size x world size.

    Args:
        scale_lr: multiply lr by the global batch (world size x batch_size x
            accumulate_steps) over ``reference_batch`` (the linear scaling rule); see
            :mod:`pipeline.train.schedule`.
        reference_batch: the global batch ``lr`` was tuned for; None: the run's first
            ``batch_size x accumulate_steps`` on one rank (kept in its checkpoints, so a
            resume with another batch size keeps the rate of the same global batch).
        warmup_epochs: linear warm-up from lr to the scaled lr over this many epochs.
        schedule: after warm-up, ``cosine`` decays to 0 at the last epoch, ``step``
            multiplies by ``gamma`` every ``step_epochs``, ``none`` keeps it constant.
        grad_clip: clip the global gradient norm (after the all-reduce) to this; 0 is off.
        accumulate_steps: batches whose gradients are summed before one optimizer step
            (Horovod ``backward_passes_per_step``; DDP ``no_sync``): the all-reduce runs
            once per optimizer step.
        early_stopping_patience: stop after this many epochs without a better
            ``early_stopping_metric``; 0 is off.
        early_stopping_min_delta: how much better the metric must get to count.
        checkpoint_every_steps: also checkpoint every N optimizer steps (0: epoch ends only).
        keep_checkpoints: newest checkpoint files kept in ``checkpoints/``.
        skip_nonfinite: when the averaged gradients are NaN or inf, skip that batch (counted
            in report.json) instead of stopping the run.
        restore_best: at the end, go back to the weights of the epoch with the best
            ``early_stopping_metric`` (needs a val split): they are what is tested and saved
            in model.pt (report.json's ``best_epoch``). False keeps the last epoch's.
        device: auto (``cuda:<local_rank>`` when CUDA is available, else the CPU), cpu, or
            cuda (a GPU per rank, or an error); see :mod:`pipeline.engines.device`.
        precision: fp32; bf16 (autocast to bfloat16, also on CPU); fp16 (autocast to
            float16 with a loss scaler). Parameters and optimizer state stay float32.
        preemption_check_steps: on SIGUSR1 (a batch scheduler's pre-emption warning, e.g.
            Slurm ``--signal=B:USR1@120``) every rank saves a checkpoint within this many
            optimizer steps and exits with status 75 (``preempted:``); 0 leaves SIGUSR1's
            default action (the process ends). See :mod:`pipeline.train.preemption`.
        progress_every_s: when rank 0's stderr is not a terminal (under every launcher), a
            progress line (epoch, step/steps, samples/s, ETA) this often; 0 is off. On a
            terminal, a progress bar instead.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    scale_lr: bool = True
    reference_batch: Optional[int] = None
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    step_epochs: int = 10
    gamma: float = 0.1
    grad_clip: float = 0.0
    accumulate_steps: int = 1
    early_stopping_patience: int = 0
    early_stopping_metric: str = "val_loss"
    early_stopping_min_delta: float = 0.0
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 2
    skip_nonfinite: bool = False
    restore_best: bool = True
    device: str = "auto"
    precision: str = "fp32"
    preemption_check_steps: int = 10
    progress_every_s: float = 30.0
