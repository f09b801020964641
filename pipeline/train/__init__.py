"""Training: the data-parallel loop, the run directory, and the per-rank entry point.

Nothing is imported here eagerly: the command line reads small modules of this package
(pre-emption, run records) without paying for torch.
"""
from __future__ import annotations

__all__ = ["TrainResult", "Trainer", "dataset_path"]


def __getattr__(name: str):
    if name in __all__:
        from pipeline.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'pipeline.train' has no attribute {name!r}")
