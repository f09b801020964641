"""Spark preprocessing: raw rows -> validated, split, featurized, sharded, published version.

This package (and ``pipeline.score``) is the only place pyspark is imported.
"""
from pipeline.prep.job import PrepareError, PrepareResult, prepare

__all__ = ["PrepareError", "PrepareResult", "prepare"]
