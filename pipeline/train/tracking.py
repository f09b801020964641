"""Experiment tracking with MLflow (``run.tracking: mlflow``), from rank 0 only.

What is logged: the resolved config as params (flattened keys, ``train.lr``), each epoch's
metrics with the epoch as the step, report.json / curves.png / config.yaml / run.json as
artifacts, and the model with ``mlflow.pytorch.log_model`` and a signature built from the
dataset's schema. The MLflow run's id is kept in ``<run dir>/tracking.json``, so a resumed
run goes on logging into the same MLflow run.

Tracking never stops training: any failure (server down, store unwritable, MLflow not
installed) is one warning, and tracking is off for the rest of the run.

Where: ``run.tracking_uri`` (an MLflow server ``http://host:5000``, ``sqlite:///…``,
``databricks``); unset, a SQLite store beside the runs, ``<run.root>/mlflow.db`` with
artifacts in ``<run.root>/mlartifacts`` (MLflow 3 keeps its plain-file store in maintenance
mode and refuses it by default; SQLite is the local store it recommends).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from pipeline import storage
from pipeline.config import Config, to_dict

log = logging.getLogger(__name__)

TRACKING_FILE = "tracking.json"
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
ARTIFACTS = ("report.json", "curves.png", "config.yaml", "run.json", "metrics.jsonl")
_INSTALL = "pip install 'mlflow-skinny>=3.5' sqlalchemy alembic (or the project's extra: pip install -e '.[tracking]')"


def default_tracking_uri(run_root: str) -> tuple[str, str]:
    """The local store beside the runs: (tracking URI, artifact location)."""
    root = Path(storage.resolve(storage.absolute(run_root))[1])  # a plain path or a file:// URI
    return f"sqlite:///{root / 'mlflow.db'}", (root / "mlartifacts").as_uri()


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": "0.1"}`` (MLflow params are strings)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


class NoTracking:
    """``run.tracking: none`` (and what a tracker becomes after a failure)."""

    def log_epoch(self, record: dict) -> None:
        pass

    def finish(self, run_dir: str, model, schema: dict) -> None:
        pass

    def stop(self, status: str) -> None:
        pass


class MlflowTracking(NoTracking):
    """One MLflow run per pipeline run; every call swallows its own failure (see module doc)."""

    def __init__(self, cfg: Config, run_dir: str, resume: bool):
        self.run_id = None
        try:
            self._start(cfg, run_dir, resume)
        except Exception as err:  # noqa: BLE001 -- tracking must never stop training
            self._failed("could not start", err)

    def _start(self, cfg: Config, run_dir: str, resume: bool) -> None:
        try:
            import mlflow
            from mlflow import MlflowClient
        except ImportError as err:
            raise RuntimeError(f"MLflow is not installed ({err}); {_INSTALL}") from err
        # MLflow's own HTTP defaults (7 retries, 120 s each) would hold rank 0 for minutes per
        # call while the other ranks wait in a collective (and time out): fail fast instead;
        # the first failure turns tracking off. A user's own settings win.
        for name, value in HTTP_LIMITS.items():
            os.environ.setdefault(name, value)
        artifacts = None
        self.uri = cfg.run.tracking_uri
        if self.uri is None:
            self.uri, artifacts = default_tracking_uri(cfg.run.root)
        mlflow.set_tracking_uri(self.uri)
        self.client = client = MlflowClient(self.uri)
        known = self._recorded(run_dir) if resume else None
        if known is not None:
            self.run_id = known["run_id"]
            client.update_run(self.run_id, status="RUNNING")
            log.info("MLflow: resumed run %s in %s", self.run_id, storage.redact(self.uri))
            return
        experiment = client.get_experiment_by_name(cfg.name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(cfg.name, artifact_location=artifacts)
        run = client.create_run(experiment_id, run_name=storage.basename(run_dir),
                                tags={"pipeline.run_dir": run_dir, "mlflow.source.name": "pipeline"})
        self.run_id = run.info.run_id
        params = flatten(to_dict(cfg))
        from mlflow.entities import Param

        batch = [Param(k, v[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(batch), 100):  # the REST API takes at most 100 params a call
            client.log_batch(self.run_id, params=batch[start:start + 100])
        storage.write_text(storage.join(run_dir, TRACKING_FILE),
                           json.dumps({"tracking_uri": storage.redact(self.uri), "experiment_id": experiment_id, "run_id": self.run_id}) + "\n")
        log.info("MLflow: run %s in experiment %r at %s", self.run_id, cfg.name, storage.redact(self.uri))

    @staticmethod
    def _recorded(run_dir: str) -> dict | None:
        path = storage.join(run_dir, TRACKING_FILE)
        return json.loads(storage.read_text(path)) if storage.exists(path) else None

    def _failed(self, what: str, err: Exception) -> None:
        log.warning("MLflow tracking %s (%s: %s); training goes on without tracking", what, type(err).__name__,
                    str(err).strip().splitlines()[0][:300] if str(err).strip() else "")
        self.__class__ = NoTracking  # every later call is a no-op

    def log_epoch(self, record: dict) -> None:
        try:
            from mlflow.entities import Metric

            step, now = int(record["epoch"]), _now_ms()
            metrics = [Metric(k, float(v), now, step) for k, v in record.items()
                       if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as err:  # noqa: BLE001
            self._failed(f"could not log epoch {record.get('epoch')}", err)

    def finish(self, run_dir: str, model, schema: dict) -> None:
        """Artifacts, the model, and the run marked finished."""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for name in ARTIFACTS:
                    if storage.exists(storage.join(run_dir, name)):
                        local = Path(tmp) / name
                        local.write_bytes(storage.read_bytes(storage.join(run_dir, name)))
                        self.client.log_artifact(self.run_id, str(local))
            self._log_model(model, schema)
            self.client.set_terminated(self.run_id, status="FINISHED")
        except Exception as err:  # noqa: BLE001
            self._failed("could not log the run's outputs", err)

    def _log_model(self, model, schema: dict) -> None:
        import copy

        import mlflow

        model = copy.deepcopy(model).to("cpu").eval()  # loadable where there is no GPU

        with mlflow.start_run(run_id=self.run_id):
            mlflow.pytorch.log_model(model, name="model", signature=signature(schema), serialization_format="pickle",
                                     code_paths=[str(Path(__file__).resolve().parents[1])])

    def stop(self, status: str) -> None:
        """The run ended early: ``FAILED``, or ``KILLED`` when pre-empted (a resume reopens it)."""
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as err:  # noqa: BLE001
            self._failed("could not mark the run ended", err)


def signature(schema: dict):
    """The model's inputs (one named tensor per feature column, batch first: a sequence
    feature is (batch, steps, dims) float32 plus its int32 lengths) and output (logits)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from pipeline.schema import length_column

    inputs = []
    for name, spec in schema["features"].items():
        if spec["kind"] == "sequence":
            inputs += [TensorSpec(np.dtype("float32"), (-1, -1, spec["dims"]), name),
                       TensorSpec(np.dtype("int32"), (-1,), length_column(name))]
        else:
            inputs.append(TensorSpec(np.dtype(spec["dtype"]), (-1, *spec["shape"]), name))
    classes = schema["label"]["num_classes"]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([TensorSpec(np.dtype("float32"), (-1, classes), "logits")]))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def open_tracking(cfg: Config, run_dir: str, resume: bool) -> NoTracking:
    """The tracker for this run (rank 0)."""
    return MlflowTracking(cfg, run_dir, resume) if cfg.run.tracking == "mlflow" else NoTracking()
