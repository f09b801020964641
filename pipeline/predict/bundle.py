"""The model bundle as predict and export read it: the model, and how its input was read.

Bundles written since predict exists keep the ``data`` sections that say how the raw
input was read (``source``, ``tensor``, ``table``, ``image``, ``sequence``, ``split``; see
:func:`pipeline.train.run_dir.model_bundle`). Older ones need the run's config.
"""
from __future__ import annotations

import dataclasses

from pipeline import storage
from pipeline.config import ConfigError, DataConfig
from pipeline.score.job import ScoreError, load_bundle


class PredictError(ScoreError):
    """A model or an input predict cannot use; nothing was written. (A ScoreError: the
    same family of problems as score's, reported the same way.)"""


def read_bundle(model_path: str) -> dict:
    """The bundle at ``model_path`` (a run's model.pt), loaded weights-only."""
    return load_bundle(storage.absolute(str(model_path)))[1]


def reading_config(bundle: dict, model_path: str, data: DataConfig | None = None) -> DataConfig:
    """How to read input for this model: ``data`` (from ``--config``) when given, else
    what the bundle recorded.

    Raises:
        PredictError: an older bundle without the record, and no config.
    """
    if data is not None:
        return data
    stored = bundle.get("data")
    if stored is None:
        config = storage.join(storage.parent(storage.absolute(str(model_path))), "config.yaml")
        hint = config if storage.exists(config) else "conf/<experiment>.yaml"
        raise PredictError(f"{model_path}: this model bundle was written before predict existed and does not record how "
                           f"its input was read; pass the config it was trained with: --config {hint}")
    return data_config(stored)


def data_config(stored: dict) -> DataConfig:
    """A bundle's ``data`` sections as a DataConfig (the rest at their defaults)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    known = {f.name for f in dataclasses.fields(DataConfig)}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(DataConfig), {k: v for k, v in stored.items() if k in known})
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"the model bundle's data settings do not load ({str(err).splitlines()[0]}); "
                          "pass the run's config with --config") from None


def ignore_readonly_arrays() -> None:
    """Arrow hands the reader's decode read-only numpy buffers; torch warns about them,
    though the model only reads them."""
    import warnings

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


def model_from_bundle(bundle: dict):
    """The bundle's Classifier with its weights, in eval mode, on the CPU."""
    from pipeline.config import ModelConfig
    from pipeline.models import build_model

    model = build_model(ModelConfig(**bundle["model"]), bundle["schema"], bundle["featurizer"])
    model.load_state_dict(bundle["state_dict"])
    return model.eval()
