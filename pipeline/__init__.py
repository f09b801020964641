"""Distributed training pipeline: Spark preprocessing, Horovod/PyTorch training, Spark scoring."""
__version__ = "0.1.0"
