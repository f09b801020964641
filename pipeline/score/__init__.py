"""Batch scoring in Spark: the dataset's saved featurizer and a trained model applied to new
raw data (validation as in prepare, rejected rows kept with their reason)."""
from pipeline.score.job import ScoreError, ScoreResult, score

__all__ = ["ScoreError", "ScoreResult", "score"]
