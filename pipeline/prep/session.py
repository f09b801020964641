"""Building the SparkSession that prepare and score run in."""
from __future__ import annotations

import os
import shlex
import sys
from contextlib import contextmanager


def require_pyspark():
    """Import pyspark or fail with an install hint."""
    try:
        import pyspark  # noqa: F401
    except ImportError as err:
        raise ImportError("pyspark is needed for this job: run `make setup` (or pip install 'pyspark==4.3.0')") from err


def get_session(app_name: str, master: str | None = None, conf: dict | None = None):
    """Return the active SparkSession, or start one.

    The master is chosen the way Spark chooses it: ``spark-submit --master``, ``--conf
    spark.master`` and ``spark-defaults.conf`` win, then the ``SPARK_MASTER`` (or
    ``MASTER``) environment variable, then ``master``, and ``local[*]`` only when nothing
    is set. Executors use this interpreter unless PYSPARK_PYTHON says otherwise, so they
    see the same pyarrow and pipeline code.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    configured = configured_master()
    chosen = configured or os.environ.get("SPARK_MASTER") or os.environ.get("MASTER") or master or "local[*]"
    builder = SparkSession.builder.appName(app_name)
    if not configured:
        builder = builder.master(chosen)
    if chosen.startswith("local"):
        # One JVM on this machine: bind to loopback rather than the first network interface.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    defaults = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        # Spark's stage progress bar on a terminal; never into a pipe or a log file.
        "spark.ui.showConsoleProgress": str(sys.stderr.isatty()).lower(),
    }
    archive_options = _class_archive_options(conf or {})
    if archive_options is not None:
        defaults[DRIVER_JAVA_OPTIONS] = archive_options
    for key, value in {**defaults, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if spark.conf.get(HUGE_METHOD_LIMIT, None) is None:  # the user's --conf or spark-defaults.conf wins
        spark.conf.set(HUGE_METHOD_LIMIT, str(HOTSPOT_HUGE_METHOD))
    return spark


# Whole-stage code generation turns a wide projection (the validation of every column,
# standardising a feature vector, the synthetic generator) into one Java method; Spark
# keeps it while it is under 65,535 bytes of bytecode, but HotSpot never JIT-compiles a
# method over 8,000 bytes, so such a stage ran in the bytecode interpreter. At 8,000
# (what Spark's documentation of the setting advises on HotSpot) Spark drops whole-stage
# code generation for just that part of the plan and its expressions run compiled:
# measured on 1M synthetic rows (2 cores), generating them 8.0 -> 3.0 s and validating
# them 18.5 -> 4.5 s, results unchanged.
HUGE_METHOD_LIMIT = "spark.sql.codegen.hugeMethodLimit"
HOTSPOT_HUGE_METHOD = 8000


MAX_FIELDS = "spark.sql.codegen.maxFields"
CODEGEN_FIELDS_CAP = 1000


@contextmanager
def codegen_fields(spark, fields: int):
    """Whole-stage code generation for plans of up to ``fields`` fields while inside.

    Spark gives it up for a plan with more than ``spark.sql.codegen.maxFields`` (100)
    fields, aggregation buffers included: the numeric fit's mean and deviation of 32
    columns hold 160 and ran without it (2.7-2.9 s on 2M rows, 0.8-1.4 s with it, the same
    figures). Only raises the limit, only up to 1,000 fields (beyond that the generated
    code would be too large to compile well), and restores it after.
    """
    before = spark.conf.get(MAX_FIELDS, None)
    if fields <= int(before or 100) or fields > CODEGEN_FIELDS_CAP:
        yield
        return
    spark.conf.set(MAX_FIELDS, str(fields))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(MAX_FIELDS)
        else:
            spark.conf.set(MAX_FIELDS, before)


DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"


def _class_archive_options(conf: dict) -> str | None:
    """The driver JVM's options for its class archive (:mod:`pipeline.prep.cds`) when this
    process is about to start that JVM, the archive exists and the user set no driver Java
    options of their own (their options win; the archive only makes start-up faster)."""
    if "PYSPARK_GATEWAY_PORT" in os.environ or DRIVER_JAVA_OPTIONS in conf or DRIVER_JAVA_OPTIONS in _spark_defaults():
        return None
    submit_args = os.environ.get("PYSPARK_SUBMIT_ARGS", "")
    if "--driver-java-options" in submit_args or DRIVER_JAVA_OPTIONS in submit_args:
        return None
    from pipeline.prep import cds

    archive = cds.archive_path()
    return cds.java_options(archive) if archive is not None and archive.is_file() else None


def configured_master() -> str | None:
    """The master the user set where Spark looks for it, or None.

    Under spark-submit the JVM that started this process holds ``--master``, ``--conf`` and
    spark-defaults.conf: ask it. Otherwise pyspark is about to start a JVM itself, whose
    spark-submit reads ``PYSPARK_SUBMIT_ARGS``, ``spark-defaults.conf`` and ``MASTER`` (and
    would answer ``local[*]`` when none is set, so it cannot be asked): read those.
    (pyspark's SparkConf before the JVM exists is an empty dict, always answering "not
    set": that once sent every cluster job to local[*].)
    """
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        from pyspark import SparkConf, SparkContext

        SparkContext._ensure_initialized()
        return SparkConf().get("spark.master", None)
    args = shlex.split(os.environ.get("PYSPARK_SUBMIT_ARGS", ""))
    for flag, value in zip(args, args[1:] + [""]):
        if flag == "--master":
            return value
        if flag.startswith("--master="):
            return flag.split("=", 1)[1]
        if flag == "--conf" and value.startswith("spark.master="):
            return value.split("=", 1)[1]
    from_defaults = _spark_defaults().get("spark.master")
    return from_defaults or os.environ.get("MASTER") or None


def _spark_defaults() -> dict[str, str]:
    """spark-defaults.conf from SPARK_CONF_DIR or SPARK_HOME/conf (or pyspark's own)."""
    import pyspark

    conf_dir = os.environ.get("SPARK_CONF_DIR") or os.path.join(
        os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__), "conf")
    path = os.path.join(conf_dir, "spark-defaults.conf")
    out = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    key, _, value = line.replace("=", " ", 1).partition(" ") if "=" in line.split()[0] else line.partition(" ")
                    out[key.strip()] = value.strip()
    return out
