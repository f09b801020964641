"""Distributed training pipeline: Spark preprocessing, Horovod/PyTorch training, Spark scoring."""
import os
from pathlib import Path

__version__ = "0.1.0"


def cache_dir() -> Path:
    """This machine's cache of what is derived from the installed software (the JVM class
    archive, Horovod's Gloo answer; setup's wheels): ``$PIPELINE_CACHE``, else
    ~/.cache/pipeline."""
    return Path(os.environ.get("PIPELINE_CACHE") or Path.home() / ".cache" / "pipeline")
