"""Training: the data-parallel loop, the run directory, and the per-rank entry point."""
from pipeline.train.trainer import Trainer, TrainResult, dataset_path

__all__ = ["TrainResult", "Trainer", "dataset_path"]
