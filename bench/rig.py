"""The multi-host rig for benchmarks: up for the duration of a ``with`` block, the digits
(or another) dataset prepared onto its object store by the cluster, and a way to time a
job from launch to its first training step."""
from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.multihost.rig import BUCKET, Rig, last_line, spark_submit  # noqa: E402

DIGITS_CONF = str(REPO / "conf" / "digits_cnn.yaml")
DIGITS_CSV = str(REPO / "data" / "raw" / "digits" / "digits.csv.gz")


@contextlib.contextmanager
def rig_up():
    """A fresh rig (its own namespaces and state), torn down at the end."""
    with tempfile.TemporaryDirectory(prefix="bench-rig-") as tmp:
        rig = Rig("pipeline-bench-rig", Path(tmp) / "state")
        try:
            rig.up()
            yield rig
        finally:
            rig.down()


def prepare_on_cluster(rig: Rig, config: str, root: str, *overrides: str) -> str:
    """spark-submit jobs/preprocess.py on the rig's cluster; the version's URI."""
    return last_line(rig.run("n1", *spark_submit("jobs/preprocess.py", "--config", config, f"data.root={root}", *overrides)))


def seconds_to_first_step(rig: Rig, launches: list[tuple[str, list[str]]], run_dir: str) -> float:
    """Start ``launches`` ((node, argv) pairs, together), wait for all; seconds from the
    start to rank 0's first step (``first_step_at`` in the report; one clock: one machine)."""
    started = time.time()
    procs = [rig.popen(node, *argv) for node, argv in launches]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a launch failed:\n" + "\n".join(o[-2000:] for o in outputs))
    return rig.read_json(f"{run_dir}/report.json")["first_step_at"] - started


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


__all__ = ["BUCKET", "DIGITS_CONF", "DIGITS_CSV", "prepare_on_cluster", "python", "rig_up", "seconds_to_first_step",
           "spark_submit"]
