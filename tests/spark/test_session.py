"""Spark's stage progress shows on a terminal and stays out of pipes and logs."""
from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.spark

JOB = """
import time
from pipeline.prep.session import get_session
spark = get_session("progress-test", "local[2]")
spark.sparkContext.parallelize(range(4), 4).map(lambda x: time.sleep(1.5) or x).count()
print("done", spark.conf.get("spark.ui.showConsoleProgress"))
spark.stop()
"""


def _run_on_a_terminal() -> str:
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin/stdout/stderr are the terminal
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-c", JOB])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    return out.decode(errors="replace")


def test_stage_progress_on_a_terminal_only():
    shown = _run_on_a_terminal()
    assert "done true" in shown, shown[-2000:]
    assert "[Stage 0:" in shown, shown[-2000:]
    piped = subprocess.run([sys.executable, "-c", JOB], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "done false" in piped.stdout, piped.stderr[-2000:]
    assert "[Stage" not in piped.stdout + piped.stderr


LIMIT_JOB = """
from pipeline.prep.session import get_session
spark = get_session("limit-test", "local[1]")
print("limit", spark.conf.get("spark.sql.codegen.hugeMethodLimit"))
spark.stop()
"""


@pytest.mark.parametrize("submit_args, expected", [("", "8000"), ("--conf spark.sql.codegen.hugeMethodLimit=20000 pyspark-shell", "20000")])
def test_wide_stages_run_compiled_unless_the_user_set_the_limit(submit_args, expected):
    """HotSpot never compiles a method over 8,000 bytes: the session keeps Spark's
    generated code under that (a user's own setting wins)."""
    env = {**os.environ, "PYSPARK_SUBMIT_ARGS": submit_args} if submit_args else {k: v for k, v in os.environ.items() if k != "PYSPARK_SUBMIT_ARGS"}
    done = subprocess.run([sys.executable, "-c", LIMIT_JOB], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert f"limit {expected}" in done.stdout, done.stderr[-2000:]
