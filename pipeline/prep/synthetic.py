"""Synthetic datasets at any scale, generated in Spark from ``spark.range``.

Every value is a function of (seed, row id, column) through ``xxhash64``, so the data
are the same whatever the number of partitions or executors. Each kind plants a signal a
model can learn: a nonlinear function of the tabular features, class-dependent stripe
patterns in images, class-dependent frequencies in sequences.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.config import DataConfig, SyntheticConfig
from pipeline.prep.raw import RawData

_U53 = float(2**53)


def uniform(seed: int, row, salt):
    """U[0, 1) from the hash of (seed, row id, salt); ``salt`` may be a Column."""
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(F.lit(seed), row, salt), F.lit(2**53)).cast("double") / _U53


def normal(seed: int, row, salt):
    """N(0, 1) by Box-Muller from the two 32-bit halves of one hash."""
    from pyspark.sql import functions as F

    h = F.xxhash64(F.lit(seed), row, salt)
    u1 = (h.bitwiseAND(F.lit(0xFFFFFFFF)).cast("double") + 1.0) / 4294967297.0  # in (0, 1]: log is finite
    u2 = F.shiftrightunsigned(h, 32).cast("double") / 4294967296.0
    return F.sqrt(-2.0 * F.log(u1)) * F.cos(2.0 * math.pi * u2)


def _tabular(df, cfg: SyntheticConfig):
    from functools import partial

    from pyspark.sql import functions as F

    rid = F.col("id")
    nums = [normal(cfg.seed, rid, F.lit(j)).alias(f"x{j}") for j in range(cfg.numeric)]
    noise = [normal(cfg.seed, rid, F.lit(f"noise{c}")).alias(f"_noise{c}") for c in range(cfg.num_classes)]
    cats = [
        F.concat(F.lit("v"), F.floor(uniform(cfg.seed, rid, F.lit(f"c{k}")) * cfg.cardinality).cast("string")).alias(f"c{k}")
        for k in range(cfg.categorical)
    ]
    df = df.select(rid, *nums, *cats, *noise)
    schema = ", ".join(["id long", *(f"x{j} double" for j in range(cfg.numeric)), *(f"c{k} string" for k in range(cfg.categorical)), "label string"])
    return df.mapInArrow(partial(plant_labels, cfg=cfg), schema)


def plant_labels(batches, cfg: SyntheticConfig):
    """mapInArrow body: label = argmax over classes of fixed random mixes of nonlinear terms.

    Vectorised numpy per batch: as one Spark expression the ~100 terms per class grow
    the generated method past what the JVM compiles, and run interpreted (measured 4x slower).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    weights = None
    for batch in batches:
        xs = [batch.column(f"x{j}").to_numpy() for j in range(cfg.numeric)]
        terms = []
        for j, x in enumerate(xs):
            terms += [np.sin(2.0 * x), x * x - 1.0]
            if j + 1 < len(xs):
                terms.append(x * xs[j + 1])
        for k in range(cfg.categorical):
            codes = pc.cast(pc.utf8_slice_codeunits(batch.column(f"c{k}"), 1), pa.int64()).to_numpy()
            terms.append(np.where(codes % 2 == 0, 1.0, -1.0))
        if weights is None:
            weights = np.random.default_rng(cfg.seed).normal(size=(cfg.num_classes, len(terms)))
        stacked = np.stack(terms) if terms else np.zeros((0, batch.num_rows))
        noise = np.stack([batch.column(f"_noise{c}").to_numpy() for c in range(cfg.num_classes)])
        scores = weights @ stacked + cfg.noise * 3.0 * noise
        label = pa.array(scores.argmax(axis=0).astype(str))
        keep = [n for n in batch.schema.names if not n.startswith("_noise")]
        yield pa.RecordBatch.from_arrays([batch.column(n) for n in keep] + [label], names=keep + ["label"])


def _images(df, cfg: SyntheticConfig):
    from pyspark.sql import functions as F

    h, w = cfg.image_size
    c_count, k_count = cfg.channels, cfg.num_classes
    rid = F.col("id")
    label = F.floor(uniform(cfg.seed, rid, F.lit("label")) * k_count).cast("int")
    phase = uniform(cfg.seed, rid, F.lit("phase")) * 2.0 * math.pi
    n = c_count * h * w

    def pixel(i):
        row = ((i % (h * w)) / w).cast("int")
        col = i % w
        # class k: stripes of frequency 1 + k // 2, horizontal for even k, vertical for odd k
        pos = F.when(label % 2 == 0, row / h).otherwise(col / w)
        freq = (label / 2).cast("int") + 1
        signal = F.sin(2.0 * math.pi * freq * pos + phase)
        value = 128.0 + 70.0 * signal + cfg.noise * 100.0 * normal(cfg.seed, rid, i)
        return F.least(F.greatest(F.round(value), F.lit(0.0)), F.lit(255.0)).cast("int")

    image = F.transform(F.sequence(F.lit(0), F.lit(n - 1)), pixel)
    return df.select(rid, label.cast("string").alias("label"), image.alias("_image"), F.lit(None).cast("string").alias("_error"))


def _sequences(df, cfg: SyntheticConfig):
    from pyspark.sql import functions as F

    rid = F.col("id")
    label = F.floor(uniform(cfg.seed, rid, F.lit("label")) * cfg.num_classes).cast("int")
    span = cfg.max_length - cfg.min_length + 1
    length = (F.lit(cfg.min_length) + F.floor(uniform(cfg.seed, rid, F.lit("length")) * span)).cast("int")
    phase = uniform(cfg.seed, rid, F.lit("phase")) * 2.0 * math.pi
    dims = cfg.dims

    def value(i):
        d = (i / length).cast("int")  # channel-major: d * length + t
        t = i % length
        freq = 1.0 + label.cast("double") * 0.5 + d.cast("double") * 0.25
        return F.sin(2.0 * math.pi * freq * t / F.lit(16.0) + phase) + cfg.noise * normal(cfg.seed, rid, i)

    values = F.transform(F.sequence(F.lit(0), length * dims - 1), value)
    return df.select(
        rid,
        label.cast("string").alias("label"),
        values.alias("_values"),
        length.alias("_length"),
        F.lit(dims).alias("_dims"),
        F.lit(None).cast("string").alias("_error"),
    )


def read_synthetic(spark, data: DataConfig) -> RawData:
    from pipeline.prep import features

    cfg = data.source.synthetic
    base = spark.range(0, cfg.rows, numPartitions=cfg.partitions or spark.sparkContext.defaultParallelism)
    classes = [str(k) for k in range(cfg.num_classes)]
    if cfg.kind == "tabular":
        df = _tabular(base, cfg)
        numeric = [f"x{j}" for j in range(cfg.numeric)]
        categorical = [f"c{k}" for k in range(cfg.categorical)]
        builders = []
        if numeric:
            builders.append(features.NumericColumns(numeric, typed=True))
        if categorical:
            builders.append(features.CategoricalColumns(categorical, data.table.top_k if data.table else 1000))
        return RawData(df, ["id", *numeric, *categorical, "label"], "label", ["id"], [], builders, classes=classes)
    if cfg.kind == "images":
        h, w = cfg.image_size
        return RawData(_images(base, cfg), ["id", "label"], "label", ["id"], [], [features.DecodedImage([cfg.channels, h, w])], classes=classes)
    seq = data.sequence
    builder = features.Series(cfg.dims, max(seq.min_length, 1), seq.max_length, None, normalize=seq.normalize)
    return RawData(_sequences(base, cfg), ["id", "label"], "label", ["id"], [], [builder], classes=classes)
