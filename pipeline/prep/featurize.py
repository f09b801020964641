"""Fitting the featurizer on the train split with Spark aggregations."""
from __future__ import annotations


def fit_tensor_stats(train_df, column: str) -> dict:
    """Mean and std of every value of an array column over the train split.

    Computed as sums of per-row sums (one pass, no explode), so it scales with rows.
    """
    from pyspark.sql import functions as F

    values = F.col(column)
    row_sum = F.aggregate(values, F.lit(0.0), lambda acc, x: acc + x.cast("double"))
    row_sq = F.aggregate(values, F.lit(0.0), lambda acc, x: acc + x.cast("double") * x.cast("double"))
    agg = train_df.agg(F.sum(row_sum).alias("s"), F.sum(row_sq).alias("sq"), F.sum(F.size(values)).alias("n")).first()
    n = agg["n"] or 0
    if n == 0:
        return {"mean": 0.0, "std": 1.0}
    mean = agg["s"] / n
    var = max(agg["sq"] / n - mean * mean, 0.0)
    std = var**0.5
    return {"mean": mean, "std": std if std > 0 else 1.0}
