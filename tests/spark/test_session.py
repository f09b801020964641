"""The sessions the jobs start: stage progress on a terminal only, the code-generation limit, the JVM class archive."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
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


ARGS_JOB = """
from pipeline.prep.session import get_session
spark = get_session("archive-test", "local[1]")
args = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments().toString()
print("shared", [a for a in args.strip("[]").split(", ") if "SharedArchiveFile" in a or "-Dmine" in a])
print("count", spark.range(10).count())
spark.stop()
"""


def test_driver_jvm_starts_from_the_class_archive_unless_the_user_set_java_options(tmp_path):
    """setup's archive (python -m pipeline.prep.cds) reaches the JVM that pyspark starts; a
    damaged one is never published under the name sessions use; the user's options win."""
    from pipeline.prep import cds

    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_SUBMIT_ARGS"} | {"PIPELINE_CACHE": str(tmp_path)}
    built = subprocess.run([sys.executable, "-m", "pipeline.prep.cds"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    archive = Path(built.stdout.strip())
    assert built.returncode == 0 and archive.is_file() and archive.parent == tmp_path / "spark-cds", built.stderr[-2000:]
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]  # no staged leftovers
    assert "building the JVM class archive" in built.stderr  # setup says so when it builds one ...
    again = subprocess.run([sys.executable, "-m", "pipeline.prep.cds"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert (again.returncode, again.stdout.strip(), again.stderr) == (0, str(archive), "")  # ... and only then
    doctor = subprocess.run([sys.executable, "-m", "pipeline", "doctor"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert f"jvm cds    {archive}" in doctor.stdout, doctor.stdout
    ran = subprocess.run([sys.executable, "-c", ARGS_JOB], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert f"shared ['-XX:SharedArchiveFile={archive}']" in ran.stdout and "count 10" in ran.stdout, ran.stderr[-2000:]
    assert "shared archive" not in ran.stdout + ran.stderr
    own_conf = env | {"SPARK_CONF_DIR": str(tmp_path / "conf")}  # another class path: another archive, none built yet
    (tmp_path / "conf").mkdir()
    ran = subprocess.run([sys.executable, "-c", ARGS_JOB], cwd=REPO, env=own_conf, capture_output=True, text=True, timeout=300)
    assert "shared []" in ran.stdout and "count 10" in ran.stdout and "shared archive" not in ran.stdout + ran.stderr, ran.stderr[-2000:]
    mine = env | {"PYSPARK_SUBMIT_ARGS": "--driver-java-options -Dmine=1 pyspark-shell"}
    ran = subprocess.run([sys.executable, "-c", ARGS_JOB], cwd=REPO, env=mine, capture_output=True, text=True, timeout=300)
    assert "shared ['-Dmine=1']" in ran.stdout, ran.stderr[-2000:]
    damaged = tmp_path / "damaged.jsa"
    damaged.write_bytes(archive.read_bytes()[: 1 << 20])
    assert cds.usable(archive) and not cds.usable(damaged)


def test_the_numeric_fit_aggregates_in_generated_code_and_the_limit_is_restored(spark):
    """32 columns' mean and deviation hold 160 aggregation-buffer fields, past Spark's
    100-field limit for whole-stage code generation; the fit raises it while it runs."""
    from pyspark.sql import functions as F

    from pipeline.prep.features import NumericColumns
    from pipeline.prep.session import MAX_FIELDS, codegen_fields

    columns = [f"x{j}" for j in range(32)]
    df = spark.range(0, 1000).select(*[(F.col("id") * (j + 1) % 17).cast("double").alias(c) for j, c in enumerate(columns)])
    aggs = [a for c in columns for a in (F.avg(c), F.stddev_pop(c))]

    def generated(query) -> bool:
        query.collect()
        plan = query._jdf.queryExecution().executedPlan().toString()
        return any(line.lstrip(" +-:").startswith("*(") and "HashAggregate" in line for line in plan.splitlines())

    before = spark.conf.get(MAX_FIELDS, None)
    assert not generated(df.agg(*aggs))
    with codegen_fields(spark, 7 * len(columns)):
        assert generated(df.agg(*aggs))
    assert spark.conf.get(MAX_FIELDS, None) == before
    with codegen_fields(spark, 5000):  # past the cap: left alone
        assert spark.conf.get(MAX_FIELDS, None) == before
    fitted = NumericColumns(columns, typed=True).fit(df)
    assert spark.conf.get(MAX_FIELDS, None) == before
    expected = df.toPandas()
    assert np.allclose(fitted["mean"], expected.mean(), rtol=1e-12, atol=0)
    std = expected.std(ddof=0).to_numpy()
    assert np.allclose(fitted["std"], np.where(std > 1e-12, std, 1.0), rtol=1e-12, atol=0)  # x16 is constant: 1.0
