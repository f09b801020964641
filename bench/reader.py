"""Shard reader throughput, input stall and memory, each against a baseline in one run.

    .venv/bin/python bench/reader.py [--tabular-rows 1000000] [--image-rows 50000] [--memory-rows 1000000 10000000]

1. Reader vs raw pyarrow: rows/s of ShardReader producing torch batches vs
   ``pyarrow.parquet.ParquetFile.iter_batches`` decoding the same files single-threaded
   (goal >= 0.8x), for a tabular and an image dataset.
2. Input stall: the MLP (tabular) and CNN (images) trained for one epoch from the reader
   vs from the same batches preloaded in memory (goal >= 0.95x), and the time the trainer
   waited for the next batch. A whole epoch, so the reader's start-up (footers, the first
   window) weighs as it does in training; ``--steps N`` times the first N steps only.
3. Memory: peak RSS of a fresh process reading one epoch of a small vs a large dataset
   (goal: the large one needs <= 1.1x the small one's).
4. Object store: the reader over a real S3 server (SeaweedFS on 127.0.0.1) vs over local
   disk, same shards (goal >= 0.7x); also through the node-local shard cache. Re-measure
   it alone with ``--only-store`` (the other sections keep their figures and dates).
5. Integrity: rows/s with every data page's checksum verified (the default) vs without,
   same shards (goal: at most 5% slower). Alone: ``--only-checksums``.
6. Where the time goes (``--only-profile``, no goal): one epoch read inline under cProfile,
   its functions' own time by part (decode, shuffle gather, epoch plan, batching), beside
   the raw pyarrow decode of the same files. ``--only-throughput`` re-measures 1 and 2 alone.

Datasets are made by the prepare job (synthetic generators) in a temporary directory.
Writes bench/results/reader.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import RESULTS, goal, merge_section  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.data import ShardReader  # noqa: E402
from pipeline.models import build_model  # noqa: E402

BATCH = 256


def prepare_datasets(root: Path, tabular_rows: int, image_rows: int, memory_rows: list[int], only_memory: bool = False,
                     only_tabular: bool = False) -> dict:
    from pipeline.prep import prepare
    from pipeline.prep.session import get_session

    spark = get_session("bench-reader", "local[*]", {"spark.driver.memory": "6g", "spark.ui.enabled": "false"})
    out = {}
    try:
        specs = {
            "tabular": (tabular_rows, ["data.source.synthetic.kind=tabular", "data.source.synthetic.numeric=32", "data.source.synthetic.categorical=4", "model.type=mlp"]),
            "images": (image_rows, ["data.source.synthetic.kind=images", "data.source.synthetic.image_size=[32,32]", "data.source.synthetic.channels=3", "model.type=cnn"]),
        }
        if only_memory:
            specs = {}
        if only_tabular:
            specs = {"tabular": specs["tabular"]}
        for rows in memory_rows:
            specs[f"memory-{rows}"] = (rows, ["data.source.synthetic.kind=tabular", "data.source.synthetic.numeric=8", "data.source.synthetic.categorical=0", "model.type=mlp"])
        for name, (rows, overrides) in specs.items():
            cfg = load_config(None, [
                f"name={name}", f"data.root={root}", "data.source.type=synthetic", f"data.source.synthetic.rows={rows}",
                f"data.source.synthetic.partitions={max(2, rows // 250_000)}", "data.split.train=1.0", "data.split.val=0", "data.split.test=0",
                "data.shards.rows_per_shard=200000", "data.shards.row_group_rows=8192", *overrides,
            ])
            out[name] = (prepare(cfg, spark).version_dir, cfg)
            print(f"prepared {name}: {rows:,} rows", flush=True)
    finally:
        spark.stop()
    return out


def raw_pyarrow_rows_per_sec(version_dir: str, manifest: dict) -> float:
    started, rows = time.perf_counter(), 0
    for shard in manifest["splits"]["train"]["shards"]:
        f = pq.ParquetFile(f"{version_dir}/{shard['path']}")
        for batch in f.iter_batches(batch_size=BATCH, use_threads=False):
            rows += batch.num_rows
    return rows / (time.perf_counter() - started)


def reader_rows_per_sec(version_dir, **kwargs) -> float:
    reader = ShardReader(str(version_dir), "train", 0, 1, BATCH, shuffle_buffer=8192, **kwargs)
    started, rows = time.perf_counter(), 0
    for batch in reader:
        rows += len(batch["label"])
    return rows / (time.perf_counter() - started)


def median_of_alternating(a, b, repeats: int = 3) -> tuple[float, float]:
    """Warm both up once (page cache, imports), then alternate timed runs; medians."""
    a(), b()
    xs, ys = [], []
    for _ in range(repeats):
        xs.append(a())
        ys.append(b())
    return statistics.median(xs), statistics.median(ys)


def train_steps(model, optimizer, batches, steps: int) -> tuple[float, float]:
    """(seconds, seconds waiting for the next batch) for ``steps`` training steps."""
    model.train()
    waited, it = 0.0, iter(batches)
    started = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(it)
        waited += time.perf_counter() - t0
        loss = F.cross_entropy(model(batch), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started, waited


def stall(version_dir: Path, cfg, steps: int | None) -> dict:
    reader = ShardReader(version_dir, "train", 0, 1, BATCH, shuffle_buffer=8192)
    steps = len(reader) if steps is None else min(steps, len(reader))
    preloaded = [b for _, b in zip(range(steps), reader)]
    runs: dict[str, list] = {"in_memory": [], "reader": []}
    for _ in range(3):  # alternate, keep the median run of each
        for label, source in (("in_memory", lambda: preloaded), ("reader", lambda: reader)):
            torch.manual_seed(0)
            model = build_model(cfg.model, reader.manifest["schema"], reader.manifest["featurizer"])
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            train_steps(model, optimizer, preloaded, min(5, steps))  # warm-up
            seconds, waited = train_steps(model, optimizer, source(), steps)
            runs[label].append({"steps": steps, "seconds": seconds, "steps_per_sec": steps / seconds, "input_wait_seconds": waited})
    results = {k: sorted(v, key=lambda r: r["seconds"])[len(v) // 2] for k, v in runs.items()}
    results["ratio"] = results["reader"]["steps_per_sec"] / results["in_memory"]["steps_per_sec"]
    return results


# ru_maxrss survives exec (it would report the parent's peak), so the child samples itself.
_EPOCH_IN_FRESH_PROCESS = """
import json, sys
from bench.common import PeakRSS
from pipeline.data import ShardReader
import psutil, torch
before = psutil.Process().memory_info().rss
with PeakRSS(interval=0.02) as mem:
    rows = sum(len(b["label"]) for b in ShardReader(sys.argv[1], "train", 0, 1, int(sys.argv[2]), shuffle_buffer=8192))
print(json.dumps({"rows": rows, "rss_after_imports_mb": before / 2**20, "peak_rss_mb": mem.self_peak / 2**20}))
"""


def memory_growth(version_dir: Path) -> dict:
    """Peak RSS of a fresh process reading one epoch (so earlier runs cannot hide growth)."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", _EPOCH_IN_FRESH_PROCESS, str(version_dir), str(BATCH)],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["growth_mb"] = result["peak_rss_mb"] - result["rss_after_imports_mb"]
    return result


def memory_goal(small: dict, large: dict) -> dict:
    """On the memory reading adds (peak RSS minus RSS after the imports, ~250 MB of which are
    torch and pyarrow): the total would hide growth under the imports."""
    return goal(f"reader memory growth (peak - after imports), {large['rows']:,} / {small['rows']:,} rows",
                large["growth_mb"] / small["growth_mb"], 1.1, higher_is_better=False)


def remeasure_memory(memory_rows: list[int]) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-reader-"))
    try:
        data = prepare_datasets(work, 0, 0, memory_rows, only_memory=True)
        small, large = (memory_growth(data[f"memory-{rows}"][0]) for rows in memory_rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    merge_section("reader", "memory", {"small": small, "large": large, "earlier_runs": earlier_memory_runs()}, [memory_goal(small, large)])
    print(f"memory: growth {small['growth_mb']:.0f} MB at {small['rows']:,} rows, {large['growth_mb']:.0f} MB at {large['rows']:,}")


def store_throughput(version_dir: str, work: Path) -> dict:
    """Reader rows/s from a real S3 server vs from local disk, on the same shards."""
    import os

    from pipeline import storage
    from pipeline.data.cache import ShardCache
    from tests.objectstore import SeaweedFS

    store = SeaweedFS(work / "store").start()
    try:
        os.environ.update(store.env())
        remote = store.uri("bench", storage.basename(version_dir))
        for entry in storage.list_files(version_dir):
            storage.upload(entry.uri, storage.join(remote, storage.relative(entry.uri, version_dir)))
        local, s3 = median_of_alternating(lambda: reader_rows_per_sec(version_dir), lambda: reader_rows_per_sec(remote))
        cache = ShardCache(str(work / "cache"), max_bytes=1 << 40)
        reader_rows_per_sec(remote, cache=cache)  # fills the cache (first epoch)
        cached = statistics.median(reader_rows_per_sec(remote, cache=cache) for _ in range(3))
    finally:
        store.stop()
    return {"local_rows_per_sec": local, "s3_rows_per_sec": s3, "ratio": s3 / local,
            "s3_cached_rows_per_sec": cached, "cached_ratio": cached / local,
            "store": "SeaweedFS weed mini on 127.0.0.1 (loopback)", "dataset": "synthetic tabular, 32 numeric + 4 categorical"}


def checksum_cost(datasets: dict) -> dict:
    """Reader rows/s with page checksums verified vs not, on the same local shards."""
    out = {}
    for name, (version_dir, _) in datasets.items():
        off, on = median_of_alternating(lambda: reader_rows_per_sec(version_dir, page_checksums=False),
                                        lambda: reader_rows_per_sec(version_dir, page_checksums=True), repeats=5)
        out[name] = {"rows_per_sec_without": off, "rows_per_sec_with": on, "ratio": on / off}
    return out


def checksum_goals(figures: dict) -> list[dict]:
    return [goal(f"reader rows/s with page checksums / without ({name})", f["ratio"], 0.95) for name, f in figures.items()]


def remeasure_checksums(tabular_rows: int, image_rows: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-reader-"))
    try:
        data = prepare_datasets(work, tabular_rows, image_rows, [])
        figures = checksum_cost({k: data[k] for k in ("tabular", "images")})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = merge_section("reader", "checksums", figures, checksum_goals(figures))
    for name, f in figures.items():
        print(f"checksums ({name}): {f['ratio']:.3f}x rows/s of reading without them")
    print(f"wrote {path}")


def store_goal(figures: dict) -> dict:
    return goal("reader over S3 vs local disk rows/s (tabular, loopback)", figures["ratio"], 0.7)


def remeasure_store(tabular_rows: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-reader-"))
    try:
        data = prepare_datasets(work, tabular_rows, 0, [], only_tabular=True)
        figures = store_throughput(data["tabular"][0], work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = merge_section("reader", "store", figures, [store_goal(figures)])
    print(f"store: reader {figures['s3_rows_per_sec']:,.0f} rows/s over S3 vs {figures['local_rows_per_sec']:,.0f} local "
          f"({figures['ratio']:.2f}x); cached {figures['cached_ratio']:.2f}x; wrote {path}")


# Where a function's own time goes, by the part of the reader it belongs to.
_PARTS = (("decode (pyarrow row groups to numpy)", ("read_row_group", "iter_batches", "groups.py", "_flat_values", "decode_table")),
          ("shuffle gather (take, concat)", ("ragged.py",)),
          ("epoch plan (assign)", ("assign.py",)),
          ("batching and collate", ("reader.py", "from_numpy", "'long'", "ascontiguousarray")))


def profile_epoch(version_dir: str, manifest: dict) -> dict:
    """One epoch read inline (prefetch=0, so one thread does all the work) under cProfile,
    beside the raw pyarrow decode of the same files: where the reader's time goes."""
    import cProfile
    import pstats

    raw = statistics.median(1 / raw_pyarrow_rows_per_sec(version_dir, manifest) for _ in range(3))
    reader_rows_per_sec(version_dir, prefetch=0)  # warm
    profiler = cProfile.Profile()
    profiler.enable()
    rows_per_sec = reader_rows_per_sec(version_dir, prefetch=0)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = sum(tt for _, _, tt, _, _ in stats.values())
    functions = sorted(((f"{Path(file).name}:{line}({name})", tt) for (file, line, name), (_, _, tt, _, _) in stats.items()),
                       key=lambda item: -item[1])
    parts = {label: 0.0 for label, _ in _PARTS} | {"other": 0.0}
    for where, tt in functions:
        label = next((label for label, keys in _PARTS if any(k in where for k in keys)), "other")
        parts[label] += tt
    rows = manifest["splits"]["train"]["rows"]
    return {"rows": rows, "raw_pyarrow_seconds_per_row": raw, "reader_inline_rows_per_sec": rows_per_sec,
            "profiled_seconds": total, "raw_pyarrow_seconds": raw * rows,
            "parts_seconds": {k: round(v, 4) for k, v in parts.items()},
            "top_functions": [{"function": f, "seconds": round(tt, 4), "share": round(tt / total, 3)} for f, tt in functions[:12]]}


def profiles(data: dict) -> dict:
    """Section 6 for the tabular and image datasets."""
    figures = {}
    for name in ("tabular", "images"):
        version_dir = data[name][0]
        figures[name] = f = profile_epoch(version_dir, ShardReader(version_dir, "train", 0, 1, BATCH).manifest)
        print(f"{name}: {f['profiled_seconds']:.3f} s profiled (raw pyarrow {f['raw_pyarrow_seconds']:.3f} s): "
              + ", ".join(f"{k} {v:.3f}" for k, v in f["parts_seconds"].items()), flush=True)
    return figures


def remeasure_profile(tabular_rows: int, image_rows: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-reader-"))
    try:
        figures = profiles(prepare_datasets(work, tabular_rows, image_rows, []))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {merge_section('reader', 'profile', figures, [])}")


def throughput_and_stall(data: dict, steps: int | None) -> tuple[dict, dict]:
    """Sections 1 and 2 for the tabular and image datasets."""
    throughput, stalls = {}, {}
    for name in ("tabular", "images"):
        version_dir, cfg = data[name]
        manifest = ShardReader(version_dir, "train", 0, 1, BATCH).manifest
        raw, ours = median_of_alternating(lambda: raw_pyarrow_rows_per_sec(version_dir, manifest), lambda: reader_rows_per_sec(version_dir))
        throughput[name] = {"raw_pyarrow_rows_per_sec": raw, "reader_rows_per_sec": ours, "ratio": ours / raw}
        stalls[name] = stall(version_dir, cfg, steps)
        print(f"{name}: reader {ours:,.0f} rows/s vs raw pyarrow {raw:,.0f} ({ours / raw:.2f}x); "
              f"training from reader {stalls[name]['ratio']:.3f}x in-memory", flush=True)
    return throughput, stalls


def throughput_goals(throughput: dict) -> list[dict]:
    return [goal(f"reader vs raw pyarrow rows/s ({n})", throughput[n]["ratio"], 0.8) for n in throughput]


def stall_goals(stalls: dict) -> list[dict]:
    return [goal(f"training steps/s from reader vs in memory ({n})", stalls[n]["ratio"], 0.95) for n in stalls]


def remeasure_throughput(tabular_rows: int, image_rows: int, steps: int | None) -> None:
    torch.set_num_threads(psutil.cpu_count(logical=False) or 1)
    work = Path(tempfile.mkdtemp(prefix="bench-reader-"))
    try:
        throughput, stalls = throughput_and_stall(prepare_datasets(work, tabular_rows, image_rows, []), steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    merge_section("reader", "throughput", throughput, throughput_goals(throughput))
    print(f"wrote {merge_section('reader', 'input_stall', stalls, stall_goals(stalls))}")


def earlier_memory_runs() -> list[dict]:
    """Every earlier run's memory figures (the one being replaced last): kept, never overwritten."""
    path = RESULTS / "reader.json"
    earlier = json.loads(path.read_text()).get("memory", {}) if path.exists() else {}
    return [*earlier.pop("earlier_runs", []), earlier] if earlier else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tabular-rows", type=int, default=1_000_000)
    parser.add_argument("--image-rows", type=int, default=50_000)
    parser.add_argument("--memory-rows", type=int, nargs=2, default=[1_000_000, 10_000_000])
    parser.add_argument("--steps", type=int, default=None, help="training steps per input-stall run (default: one epoch)")
    parser.add_argument("--only-memory", action="store_true", help="re-measure memory only; keep the other figures in reader.json")
    parser.add_argument("--only-store", action="store_true", help="re-measure S3 vs local only; keep the other figures in reader.json")
    parser.add_argument("--only-checksums", action="store_true", help="re-measure the page-checksum cost only")
    parser.add_argument("--only-profile", action="store_true", help="profile one epoch (where the reader's time goes) only")
    parser.add_argument("--only-throughput", action="store_true", help="re-measure sections 1 and 2 only (reader vs raw "
                        "pyarrow, training from the reader vs in memory)")
    args = parser.parse_args()
    if args.only_profile:
        return remeasure_profile(args.tabular_rows, args.image_rows)
    if args.only_throughput:
        return remeasure_throughput(args.tabular_rows, args.image_rows, args.steps)
    if args.only_checksums:
        return remeasure_checksums(args.tabular_rows, args.image_rows)
    if args.only_memory:
        return remeasure_memory(args.memory_rows)
    if args.only_store:
        return remeasure_store(args.tabular_rows)
    torch.set_num_threads(psutil.cpu_count(logical=False) or 1)
    work = Path(tempfile.mkdtemp(prefix="bench-reader-"))
    try:
        data = prepare_datasets(work, args.tabular_rows, args.image_rows, args.memory_rows)
        throughput, stalls = throughput_and_stall(data, args.steps)
        checksums = checksum_cost({k: data[k] for k in ("tabular", "images")})
        store = store_throughput(data["tabular"][0], work)
        print(f"store: reader over S3 {store['ratio']:.2f}x local disk", flush=True)
        small, large = (memory_growth(data[f"memory-{rows}"][0]) for rows in args.memory_rows)
        print(f"memory growth: {small['growth_mb']:.0f} MB at {small['rows']:,} rows, {large['growth_mb']:.0f} MB at {large['rows']:,}", flush=True)
        profile = profiles(data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Section by section, each with its own provenance (a section a run skipped keeps its own).
    memory = {"small": small, "large": large, "earlier_runs": earlier_memory_runs()}
    for section, figures, goals in (("throughput", throughput, throughput_goals(throughput)),
                                    ("input_stall", stalls, stall_goals(stalls)),
                                    ("memory", memory, [memory_goal(small, large)]),
                                    ("store", store, [store_goal(store)]),
                                    ("checksums", checksums, checksum_goals(checksums)),
                                    ("profile", profile, [])):
        path = merge_section("reader", section, figures, goals)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
