"""Preprocessing throughput vs a plain Spark write of the same rows, at two scales.

    .venv/bin/python bench/prep.py [--rows 1000000 10000000] [--driver-memory 6g]

For each scale, in one Spark session (local[*]): (1) the plain write: the synthetic
tabular generator's columns straight to Parquet (zstd); (2) the full prepare job on the
same generator (validate, split, fit featurizer, write shards, manifest). Writes
bench/results/prep.json with rows/s, bytes written, peak memory of the Python driver and
of the Spark JVM, and the goals (prepare >= 0.6x the plain write's rows/s; driver memory
flat: peak at the largest scale <= 1.1x the smallest).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PeakRSS, goal, write_result  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.prep import prepare  # noqa: E402
from pipeline.prep.session import get_session  # noqa: E402
from pipeline.prep.synthetic import _tabular  # noqa: E402

NUMERIC, CATEGORICAL = 32, 4


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def config(rows: int, root: Path, partitions: int):
    return load_config(None, [
        "name=bench_prep", f"data.root={root}", "data.source.type=synthetic",
        f"data.source.synthetic.rows={rows}", f"data.source.synthetic.numeric={NUMERIC}",
        f"data.source.synthetic.categorical={CATEGORICAL}", "data.source.synthetic.cardinality=50",
        "data.source.synthetic.num_classes=4", f"data.source.synthetic.partitions={partitions}",
        "data.shards.rows_per_shard=250000", "data.shards.row_group_rows=16384", "data.shards.compression=zstd",
    ])


def plain_write(spark, cfg, out: Path) -> dict:
    base = spark.range(0, cfg.data.source.synthetic.rows, numPartitions=cfg.data.source.synthetic.partitions)
    started = time.perf_counter()
    with PeakRSS() as mem:
        _tabular(base, cfg.data.source.synthetic).write.option("compression", "zstd").parquet(str(out))
    seconds = time.perf_counter() - started
    rows = cfg.data.source.synthetic.rows
    return {"seconds": seconds, "rows_per_sec": rows / seconds, "bytes_written": dir_bytes(out),
            "driver_peak_rss_mb": mem.self_peak / 2**20, "jvm_peak_rss_mb": mem.children_peak / 2**20}


def full_prepare(spark, cfg) -> dict:
    started = time.perf_counter()
    with PeakRSS() as mem:
        result = prepare(cfg, spark)
    seconds = time.perf_counter() - started
    m = result.manifest
    written = sum(s["bytes"] for split in m["splits"].values() for s in split["shards"])
    return {"seconds": seconds, "rows_per_sec": m["input_rows"] / seconds, "bytes_written": written,
            "shards": sum(len(s["shards"]) for s in m["splits"].values()),
            "driver_peak_rss_mb": mem.self_peak / 2**20, "jvm_peak_rss_mb": mem.children_peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--driver-memory", default="6g")
    args = parser.parse_args()
    spark = get_session("bench-prep", "local[*]", {"spark.driver.memory": args.driver_memory, "spark.ui.enabled": "false"})
    scales = []
    work = Path(tempfile.mkdtemp(prefix="bench-prep-"))
    try:
        for rows in args.rows:
            partitions = max(2, rows // 250_000)
            cfg = config(rows, work / f"data-{rows}", partitions)
            plain = plain_write(spark, cfg, work / f"plain-{rows}")
            full = full_prepare(spark, cfg)
            scale = {"rows": rows, "partitions": partitions, "plain_write": plain, "prepare": full,
                     "prepare_vs_plain": full["rows_per_sec"] / plain["rows_per_sec"]}
            print(f"{rows:>11,} rows: plain {plain['rows_per_sec']:,.0f} rows/s, prepare {full['rows_per_sec']:,.0f} rows/s "
                  f"({scale['prepare_vs_plain']:.2f}x), driver peak {full['driver_peak_rss_mb']:.0f} MB", flush=True)
            scales.append(scale)
            shutil.rmtree(work / f"plain-{rows}", ignore_errors=True)
            shutil.rmtree(work / f"data-{rows}", ignore_errors=True)
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    small, large = scales[0], scales[-1]
    goals = [goal(f"prepare rows/s vs plain write at {s['rows']:,} rows", s["prepare_vs_plain"], 0.6) for s in scales]
    goals.append(goal(f"driver peak RSS at {large['rows']:,} / at {small['rows']:,} rows",
                      large["prepare"]["driver_peak_rss_mb"] / small["prepare"]["driver_peak_rss_mb"], 1.1, higher_is_better=False))
    path = write_result("prep", {"features": {"numeric": NUMERIC, "categorical": CATEGORICAL}, "spark": {"master": "local[*]", "driver_memory": args.driver_memory},
                                  "scales": scales, "goals": goals})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
