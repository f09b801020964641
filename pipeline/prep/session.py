"""Building the SparkSession that prepare and score run in."""
from __future__ import annotations

import os
import sys


def require_pyspark():
    """Import pyspark or fail with an install hint."""
    try:
        import pyspark  # noqa: F401
    except ImportError as err:
        raise ImportError("pyspark is needed for this job: run `make setup` (or pip install 'pyspark==4.3.0')") from err


def get_session(app_name: str, master: str | None = None, conf: dict | None = None):
    """Return the active SparkSession, or start one.

    The master comes from ``spark-submit --master`` when set; otherwise ``master`` or
    ``local[*]``. Executors use this interpreter unless PYSPARK_PYTHON says otherwise, so
    they see the same pyarrow and pipeline code.
    """
    require_pyspark()
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if not SparkConf().contains("spark.master"):
        master = master or "local[*]"
        builder = builder.master(master)
    if (master or "").startswith("local"):
        # One JVM on this machine: bind to loopback rather than the first network interface.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    defaults = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
    }
    for key, value in {**defaults, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
