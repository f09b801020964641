"""Preprocessing throughput vs a plain Spark write of the same rows, at two scales.

    .venv/bin/python bench/prep.py [--rows 1000000 10000000] [--driver-memory 6g]

For each scale, in one Spark session (local[*]) warmed up first by one untimed plain write
and prepare of ``--warm-up-rows`` (else the first timed job, the plain write, would pay the
JVM's JIT compilation and flatter prepare: at 1M rows, measured, plain 9.8 s cold against
5.1 s warm): (1) the plain write: the synthetic
tabular generator's columns straight to Parquet (zstd); (2) the full prepare job on the
same generator (validate, split, fit featurizer, write shards, manifest). Writes
bench/results/prep.json with rows/s, bytes written, each stage's seconds, and memory:
the Python driver's and the Spark JVM's peak RSS (sampled from the processes; in local
mode that one JVM is both driver and executor), the JVM heap's peak and every task's
peak execution memory (both from Spark's own metrics, read from the event log of the
run). Goals: prepare >= 0.6x the plain write's rows/s; what users size, executor memory
per task, stays bounded as rows grow (the largest task's peak execution memory at the
largest scale <= 1.1x the smallest's).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PeakRSS, goal, provenance, write_result  # noqa: E402
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


def plain_write(spark, cfg, out: Path, group: str | None = None) -> dict:
    base = spark.range(0, cfg.data.source.synthetic.rows, numPartitions=cfg.data.source.synthetic.partitions)
    spark.sparkContext.setJobGroup(group or f"plain-{cfg.data.source.synthetic.rows}", "plain write")
    started = time.perf_counter()
    with PeakRSS() as mem:
        _tabular(base, cfg.data.source.synthetic).write.option("compression", "zstd").parquet(str(out))
    seconds = time.perf_counter() - started
    rows = cfg.data.source.synthetic.rows
    return {"seconds": seconds, "rows_per_sec": rows / seconds, "bytes_written": dir_bytes(out),
            "driver_peak_rss_mb": mem.self_peak / 2**20, "jvm_peak_rss_mb": mem.children_peak / 2**20}


def full_prepare(spark, cfg) -> dict:
    spark.sparkContext.setJobGroup(f"prepare-{cfg.data.source.synthetic.rows}", "prepare")
    started = time.perf_counter()
    with PeakRSS() as mem:
        result = prepare(cfg, spark)
    seconds = time.perf_counter() - started
    m = result.manifest
    written = sum(s["bytes"] for split in m["splits"].values() for s in split["shards"])
    return {"seconds": seconds, "rows_per_sec": m["input_rows"] / seconds, "bytes_written": written,
            "shards": sum(len(s["shards"]) for s in m["splits"].values()), "stage_seconds": m["stage_seconds"],
            "driver_peak_rss_mb": mem.self_peak / 2**20, "jvm_peak_rss_mb": mem.children_peak / 2**20}


def spark_memory(event_log: Path) -> dict[str, dict]:
    """Per job group: the largest task's peak execution memory (what a task holds for its
    sorts, shuffles and aggregations: what executor memory is sized by), the peak JVM heap
    the executor reported while those tasks ran, and the task count, from the event log."""
    group_of_stage: dict[int, str] = {}
    groups: dict[str, dict] = {}
    files = [p for p in event_log.iterdir() if p.is_file()]
    for line in (ln for f in files for ln in f.open()):
        event = json.loads(line)
        kind = event.get("Event")
        if kind == "SparkListenerJobStart":
            group = (event.get("Properties") or {}).get("spark.jobGroup.id")
            for stage in event.get("Stage IDs", []):
                if group:
                    group_of_stage[stage] = group
        elif kind == "SparkListenerTaskEnd" and event.get("Stage ID") in group_of_stage:
            g = groups.setdefault(group_of_stage[event["Stage ID"]], {"tasks": 0, "task_peak_execution_memory_mb": 0.0,
                                                                      "jvm_heap_peak_mb": 0.0, "storage_memory_peak_mb": 0.0})
            g["tasks"] += 1
            executor = event.get("Task Executor Metrics") or {}
            peak = (event.get("Task Metrics") or {}).get("Peak Execution Memory", 0) / 2**20
            g["task_peak_execution_memory_mb"] = max(g["task_peak_execution_memory_mb"], peak)
            g["jvm_heap_peak_mb"] = max(g["jvm_heap_peak_mb"], executor.get("JVMHeapMemory", 0) / 2**20)
            # What cached blocks (prepare persists its validated input) hold of the heap.
            storage = (executor.get("OnHeapStorageMemory", 0) + executor.get("OffHeapStorageMemory", 0)) / 2**20
            g["storage_memory_peak_mb"] = max(g["storage_memory_peak_mb"], storage)
    if not groups:
        raise RuntimeError(f"no task metrics found in Spark's event log under {event_log}")
    return groups


def warm_up(spark, rows: int, work: Path) -> dict:
    """One untimed plain write and prepare, so both timed sides run JIT-compiled code."""
    cfg = config(rows, work / "warm-up-data", max(2, rows // 250_000))
    started = time.perf_counter()
    plain_write(spark, cfg, work / "warm-up-plain", group="warm-up")  # its own job group: not in the memory figures
    prepare(cfg, spark)
    shutil.rmtree(work / "warm-up-plain", ignore_errors=True)
    shutil.rmtree(work / "warm-up-data", ignore_errors=True)
    return {"rows": rows, "seconds": round(time.perf_counter() - started, 3)}


def measure_scale(spark, rows: int, work: Path) -> dict:
    partitions = max(2, rows // 250_000)
    cfg = config(rows, work / f"data-{rows}", partitions)
    plain = plain_write(spark, cfg, work / f"plain-{rows}")
    full = full_prepare(spark, cfg)
    scale = {"rows": rows, "partitions": partitions, "plain_write": plain, "prepare": full,
             "prepare_vs_plain": full["rows_per_sec"] / plain["rows_per_sec"]}
    print(f"{rows:>11,} rows: plain {plain['rows_per_sec']:,.0f} rows/s, prepare {full['rows_per_sec']:,.0f} rows/s "
          f"({scale['prepare_vs_plain']:.2f}x), stages {full['stage_seconds']}", flush=True)
    shutil.rmtree(work / f"plain-{rows}", ignore_errors=True)
    shutil.rmtree(work / f"data-{rows}", ignore_errors=True)
    return scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--warm-up-rows", type=int, default=1_000_000, help="rows of the untimed warm-up run (0: none)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-prep-"))
    events = work / "events"
    events.mkdir()
    spark = get_session("bench-prep", "local[*]", {
        "spark.driver.memory": args.driver_memory, "spark.ui.enabled": "false",
        "spark.eventLog.enabled": "true", "spark.eventLog.dir": events.as_uri(),
        "spark.eventLog.rolling.enabled": "false", "spark.eventLog.compress": "false",
        # Sample the executor's memory between heartbeats too, so short tasks report it.
        "spark.executor.metrics.pollingInterval": "500ms"})
    try:
        try:
            warmed = warm_up(spark, args.warm_up_rows, work) if args.warm_up_rows else None
            scales = [measure_scale(spark, rows, work) for rows in args.rows]
        finally:
            spark.stop()
        memory = spark_memory(events)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for scale in scales:
        for phase, group in (("plain_write", "plain"), ("prepare", "prepare")):
            scale[phase]["spark_metrics"] = memory[f"{group}-{scale['rows']}"]
        metrics = scale["prepare"]["spark_metrics"]
        print(f"{scale['rows']:>11,} rows: largest task's peak execution memory {metrics['task_peak_execution_memory_mb']:.0f} MB, "
              f"JVM heap peak {metrics['jvm_heap_peak_mb']:.0f} MB (cached blocks {metrics['storage_memory_peak_mb']:.0f} MB), "
              f"JVM RSS peak {scale['prepare']['jvm_peak_rss_mb']:.0f} MB")
    small, large = scales[0], scales[-1]
    goals = [goal(f"prepare rows/s vs plain write at {s['rows']:,} rows", s["prepare_vs_plain"], 0.6) for s in scales]
    goals.append(goal(f"prepare's largest task peak execution memory at {large['rows']:,} / at {small['rows']:,} rows (Spark task metrics)",
                      large["prepare"]["spark_metrics"]["task_peak_execution_memory_mb"]
                      / max(small["prepare"]["spark_metrics"]["task_peak_execution_memory_mb"], 1e-9), 1.1, higher_is_better=False))
    path = write_result("prep", {"provenance": provenance(), "features": {"numeric": NUMERIC, "categorical": CATEGORICAL}, "spark": {"master": "local[*]", "driver_memory": args.driver_memory},
                                  "warm_up": warmed,
                                  "scales": scales, "goals": goals})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
