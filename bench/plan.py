"""Planning one epoch for one rank of a very large job, from a simulated manifest.

    .venv/bin/python bench/plan.py [--ranks 1024] [--shards 100000] [--rows 10000000000] [--groups-per-shard 10]

What every rank does before its first batch: read the manifest as the trainer does
(``read_manifest``: parse it, check every listed path stays inside the version), flatten
the split's row groups, the epoch's row-group permutation and the
stream's offsets (``EpochStream``), the epoch plan (``plan_epoch``), this rank's spans
(``rank_spans``), and the positions of its first window (``positions`` + ``locate``).
Measured in fresh processes for the first and last rank, alternating, 3 each (``--repeats``):
the median wall time and memory added over the imports (peak RSS growth) of each rank, the
worse rank's counting. Goals (issue 15): <= 1 s and <= 200 MB per
rank, manifest <= 50 MB. The manifest is simulated: 100,000 shards of 10^5 rows each in
10 row groups, the shape a 10^10-row dataset has; the shards are empty files, so the check
lists a real directory of 100,000 entries.

Writes the ``plan`` section of bench/results/plan.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import goal, merge_section  # noqa: E402
from pipeline.manifest import MANIFEST_NAME, write_manifest  # noqa: E402

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from pipeline.data import assign
from pipeline.manifest import read_manifest
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
version, ranks, rank, batch, window = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
t0 = time.perf_counter()
manifest = read_manifest(version)[1]
t_parse = time.perf_counter()
shards = manifest["splits"]["train"]["shards"]
groups = assign.row_groups(shards)
stream = assign.EpochStream(groups, seed=0, epoch=3, window=window)
plan = assign.plan_epoch(stream.total, ranks, batch)
spans = assign.rank_spans([assign.Span(0, stream.total)], plan, rank)
first = next(stream.chunks(spans))
gi, offsets = stream.locate(stream.positions(first))
t_end = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rank": rank, "seconds": t_end - t0, "read_manifest_seconds": t_parse - t0, "plan_seconds": t_end - t_parse,
                  "peak_rss_growth_mb": (peak - base) / 1024, "row_groups": len(groups), "steps": plan.steps,
                  "rows_this_rank": assign.spans_length(spans), "first_chunk_rows": len(first), "groups_in_first_chunk": int(len(np.unique(gi)))}))
"""


def simulated_manifest(shards: int, rows: int, groups_per_shard: int) -> dict:
    per_shard = rows // shards
    group = per_shard // groups_per_shard
    sizes = [group] * (groups_per_shard - 1) + [per_shard - group * (groups_per_shard - 1)]
    entries = [{"path": f"train/part-{i:06d}.parquet", "rows": per_shard, "row_groups": sizes,
                "bytes": 400 * per_shard, "sha256": hashlib.sha256(str(i).encode()).hexdigest()} for i in range(shards)]
    return {"format_version": 1, "name": "simulated", "fingerprint": "0" * 16, "input_rows": rows,
            "rejected": {"rows": 0, "by_reason": {}},
            "schema": {"features": {"x": {"kind": "tensor", "dtype": "float32", "shape": [32]}}, "label": {"num_classes": 2}},
            "featurizer": {}, "splits": {"train": {"rows": per_shard * shards, "shards": entries},
                                         "val": {"rows": 0, "shards": []}, "test": {"rows": 0, "shards": []}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=10**10)
    parser.add_argument("--groups-per-shard", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--window", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per rank; the median counts")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    measured = (0, args.ranks - 1)  # the first and the last rank
    with tempfile.TemporaryDirectory() as version:
        manifest = simulated_manifest(args.shards, args.rows, args.groups_per_shard)
        for shard in manifest["splits"]["train"]["shards"]:  # empty, but there to be listed
            (Path(version) / shard["path"]).parent.mkdir(exist_ok=True)
            (Path(version) / shard["path"]).touch()
        write_manifest(version, manifest)  # as prepare writes it
        manifest_mb = (Path(version) / MANIFEST_NAME).stat().st_size / 2**20
        os.sync()  # 100,000 new files: their write-back would land in the first rank's timing
        runs = []
        for _ in range(args.repeats):  # the ranks alternate; each rank's figure is its median
            for rank in measured:
                out = subprocess.run([sys.executable, "-c", CHILD, str(repo), version, str(args.ranks), str(rank),
                                      str(args.batch), str(args.window)], capture_output=True, text=True, check=True).stdout
                runs.append(json.loads(out))
                print(runs[-1], flush=True)
    per_rank = {rank: [r for r in runs if r["rank"] == rank] for rank in measured}
    worst_seconds = max(statistics.median(r["seconds"] for r in rs) for rs in per_rank.values())
    worst_mb = max(statistics.median(r["peak_rss_growth_mb"] for r in rs) for rs in per_rank.values())
    figures = {"ranks": args.ranks, "shards": args.shards, "rows": args.rows, "row_groups": runs[0]["row_groups"],
               "manifest_mb": manifest_mb, "repeats": args.repeats, "per_rank": runs}
    goals = [goal(f"plan one epoch for one of {args.ranks} ranks over {args.shards:,} shards / {args.rows:.0e} rows, seconds",
                  worst_seconds, 1.0, higher_is_better=False),
             goal("memory one rank adds to plan that epoch, MB", worst_mb, 200, higher_is_better=False),
             goal(f"manifest of {args.shards:,} shards, MB", manifest_mb, 50, higher_is_better=False)]
    print(json.dumps(goals, indent=1))
    if not args.no_write:
        merge_section("plan", "plan", figures, goals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
