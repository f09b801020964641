"""Helpers shared by the benchmarks: machine description, memory sampling, result files."""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


class PeakRSS:
    """Samples the peak resident memory of this process and of each child (e.g. Spark's JVM)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.self_peak, self.children_peak = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                self.self_peak = max(self.self_peak, me.memory_info().rss)
                kids = sum(c.memory_info().rss for c in me.children(recursive=True))
                self.children_peak = max(self.children_peak, kids)
            except psutil.Error:
                pass
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def write_result(name: str, result: dict) -> Path:
    """Write bench/results/<name>.json (with the machine and the goals) and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    result = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **result}
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def goal(name: str, value: float, target: float, higher_is_better: bool = True) -> dict:
    met = value >= target if higher_is_better else value <= target
    return {"name": name, "value": round(value, 4), "target": target, "met": bool(met)}


def provenance() -> dict:
    """The command, commit and time that produced a figure (kept beside the figure).
    ``PIPELINE_COMMIT`` names the commit where the tree was copied without its history
    (a lent GPU machine)."""
    try:
        if os.environ.get("PIPELINE_COMMIT"):
            raise OSError("commit given")
        repo = RESULTS.parent.parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=repo, check=True).stdout.strip()
        # Any change in the tree (code, configs) marks the figure; results written by an
        # earlier part of the same run are not changes.
        if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":(exclude)bench/results"], cwd=repo).returncode != 0:
            commit += "+uncommitted"
    except (OSError, subprocess.CalledProcessError):  # a copy of the tree without git (a lent GPU machine)
        commit = os.environ.get("PIPELINE_COMMIT", "unknown")
    return {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "commit": commit,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def merge_section(name: str, section: str, figures: dict, goals: list[dict]) -> Path:
    """Replace one section of bench/results/<name>.json and the goals it owns, stamped with
    its own provenance; every other section keeps its figures and dates."""
    path = RESULTS / f"{name}.json"
    result = json.loads(path.read_text()) if path.exists() else {"benchmark": name, "goals": []}
    result[section] = {**figures, "provenance": provenance(), "machine": machine()}
    owned = {g["name"] for g in goals}
    result["goals"] = [g for g in result.get("goals", []) if g["name"] not in owned and g.get("section") != section]
    result["goals"] += [{**g, "section": section} for g in goals]
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
