"""What a Horovod training step spends its time on, from Horovod's own timeline
(``HOROVOD_TIMELINE=<file>``, rank 0's view, Chrome trace format).

Per step: the wall-clock time during which any tensor was in each activity
(``NEGOTIATE_ALLREDUCE``: waiting for every rank to announce it, then the coordinator's
answer; ``GLOO_ALLREDUCE``: the data all-reduce; fusion-buffer copies), overlapping
tensors counted once, so the figures add up to time on the step's critical path or in the
background. A step is one all-reduce of the most frequently reduced tensor.
"""
from __future__ import annotations

import collections
import json
import statistics
from pathlib import Path


def load(path: Path) -> list[dict]:
    """The trace's events; a timeline still being written lacks its closing bracket."""
    text = path.read_text().rstrip().rstrip(",")
    return json.loads(text if text.endswith("]") else text + "]")


def summarize(path: Path) -> dict:
    events = load(path)
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name" and "name" in e.get("args", {})}
    open_: dict[int, list] = collections.defaultdict(list)
    spans: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    reductions: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "B":
            open_[e["pid"]].append((e["name"], e["ts"]))
        elif e.get("ph") == "E" and open_[e["pid"]]:
            activity, start = open_[e["pid"]].pop()
            spans[activity].append((start, e["ts"]))
            if activity == "NEGOTIATE_ALLREDUCE":
                reductions[names.get(e["pid"], "")] += 1
    steps = max(reductions.values()) if reductions else 0
    out = {"steps": steps, "tensors_per_step": sum(1 for n in reductions.values() if n == steps), "activities": {}}
    for activity, intervals in spans.items():
        if "ALLREDUCE" not in activity and "FUSION" not in activity:
            continue  # the one-off broadcasts and gathers of start-up
        out["activities"][activity] = {
            "ms_per_step": round(_union(intervals) / 1e3 / max(steps, 1), 3),
            "median_us": statistics.median(b - a for a, b in intervals),
            "count": len(intervals),
        }
    return out


def _union(intervals: list[tuple[int, int]]) -> int:
    total, current = 0, None
    for a, b in sorted(intervals):
        if current and a <= current[1]:
            current = (current[0], max(current[1], b))
        else:
            if current:
                total += current[1] - current[0]
            current = (a, b)
    return total + (current[1] - current[0] if current else 0)
