"""A class-data-sharing archive for the driver JVM that pyspark starts.

Starting a local Spark session is mostly the JVM loading and verifying Spark's classes.
The JDK's application class-data sharing (AppCDS, JDK 13+) maps them from an archive
instead: measured on 2 cores, the session 3.9-4.1 -> 2.4 s and the first job 1.1 ->
0.9 s. ``make setup`` builds the archive once per Java and pyspark install
(``python -m pipeline.prep.cds``); :func:`pipeline.prep.session.get_session` passes it to
the driver JVM it starts unless the user set the driver's Java options. Under
spark-submit the JVM is already running and nothing changes.

The archive is written to a temporary name, checked by starting a JVM from it, then
renamed: a truncated archive makes the JVM abort, so one is never left under the name
that sessions use. Its name carries the Java binary (path, size, mtime), pyspark's
version and location and ``SPARK_HOME`` / ``SPARK_CONF_DIR`` (the driver's class path), so
a changed JDK or environment looks for its own (``make setup`` in that environment builds
it). Should the JVM still refuse one, it says nothing (``-Xlog:cds=off``) and starts as
without it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline import cache_dir


def java_options(archive: Path) -> str:
    """The driver JVM's options: the archive, and silence should the JVM refuse it."""
    return f"-XX:SharedArchiveFile={archive} -Xlog:cds=off,cds+dynamic=off"


DUMP_JOB = """
import sys
from pipeline.prep.session import get_session
spark = get_session("class-archive", "local[1]", {"spark.driver.extraJavaOptions": "-XX:ArchiveClassesAtExit=" + sys.argv[1],
                                                  "spark.ui.enabled": "false"})
df = spark.range(0, 1000, numPartitions=2)
df.groupBy((df.id % 7).alias("k")).count().collect()
spark.sparkContext.parallelize(range(4), 2).map(lambda x: x + 1).count()
spark.stop()
"""


def java_binary() -> str | None:
    """The java that pyspark's launcher runs: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(java) if java and os.path.exists(java) else None


def archive_path() -> Path | None:
    """Where this Java and pyspark's archive lives (it may not exist yet); None without java."""
    import pyspark

    java = java_binary()
    if java is None:
        return None
    st = os.stat(java)
    # The JVM refuses an archive whose class path differs from the dump's; a conf dir of
    # the user's own comes first on the driver's class path, so it is part of the name.
    key = "|".join([java, str(st.st_size), str(st.st_mtime_ns), pyspark.__version__, os.path.dirname(pyspark.__file__),
                    os.environ.get("SPARK_HOME", ""), os.environ.get("SPARK_CONF_DIR", "")])
    return cache_dir() / "spark-cds" / f"spark-{pyspark.__version__}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


def usable(path: Path) -> bool:
    """Whether a JVM starts from the archive at ``path`` (a damaged one aborts it)."""
    java = java_binary()
    if java is None or not path.is_file():
        return False
    with tempfile.TemporaryDirectory(prefix="cds-check-") as scratch:  # an aborting JVM writes its crash log here
        done = subprocess.run([java, f"-XX:SharedArchiveFile={path}", f"-XX:ErrorFile={scratch}/hs_err.log", "-version"],
                              cwd=scratch, capture_output=True, timeout=120)
    return done.returncode == 0


def build(announce=None) -> Path | None:
    """Build the archive if it is missing; its path, or None when there is no java.
    ``announce(path)`` is called before a build starts (none when the archive exists)."""
    path = archive_path()
    if path is None or path.exists():
        return path
    if announce is not None:
        announce(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f"{path.name}.{os.getpid()}.partial")
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_SUBMIT_ARGS", "PYSPARK_GATEWAY_PORT")}
    try:
        done = subprocess.run([sys.executable, "-c", DUMP_JOB, str(staged)], env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not usable(staged):
            tail = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"could not build the JVM class archive {path} (exit {done.returncode}: {tail[0]}); "
                               "Spark starts without it, only slower")
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return path


if __name__ == "__main__":
    try:
        # setup.sh keeps stdout quiet; the announcement goes to stderr, in setup's words
        print(build(lambda path: print(f"setup: building the JVM class archive Spark sessions start from, {path} "
                                       "(once, ~20 s)", file=sys.stderr, flush=True))
              or "no java on PATH: no class archive built")
    except RuntimeError as err:
        print(f"warning: {err}", file=sys.stderr)
        sys.exit(1)
