"""The ``run`` section: where a run writes, and experiment tracking."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class RunConfig:
    """Where a run writes: ``<root>/<name>/`` (root a path or a URI, as ``data.root``); name
    None means ``<experiment>-<timestamp>``.

    Args:
        tracking: ``mlflow`` logs params, per-epoch metrics, artifacts and the model to
            MLflow from rank 0 (experiment = the config's ``name``); see
            :mod:`pipeline.train.tracking`. ``none`` logs nothing.
        tracking_uri: the MLflow tracking URI (``http://host:5000``, ``sqlite:///…``);
            unset: ``sqlite:///<run.root>/mlflow.db`` beside the runs (a local run.root only).
    """

    root: str = "runs"
    name: Optional[str] = None
    tracking: str = "none"
    tracking_uri: Optional[str] = None
