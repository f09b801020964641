"""Reading published dataset versions: share assignment and the Parquet shard reader.

Imports pyarrow, numpy and torch only (never pyspark).
"""
from pipeline.data.assign import EpochPlan, ShareError, plan_epoch
from pipeline.data.reader import ShardError, ShardReader

__all__ = ["EpochPlan", "ShardError", "ShardReader", "ShareError", "plan_epoch"]
