"""Shared fixtures: a session-scoped local[2] SparkSession bound to 127.0.0.1, and the
real digits dataset prepared once per session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIGITS_CSV = REPO / "data" / "raw" / "digits" / "digits.csv.gz"
DIGITS_CONF = REPO / "conf" / "digits_cnn.yaml"

# Everything a test starts binds to loopback.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


_FIXTURE_MARKS = {"spark": "spark", "digits_version": "spark", "s3_store": "s3", "s3_env": "s3"}


def pytest_collection_modifyitems(items):
    """Mark every test by what it starts (through its fixtures), so `make test-fast`
    (``-m "not spark and not dist and ..."``) really starts no Spark or Horovod process."""
    for item in items:
        for fixture, mark in _FIXTURE_MARKS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, mark))
        if "tests/distributed/" in str(item.fspath):
            item.add_marker(pytest.mark.dist)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from pipeline.prep.session import get_session

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = get_session(
        "pipeline-tests",
        master="local[2]",
        conf={
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.sql.shuffle.partitions": "4",
            "spark.sql.warehouse.dir": str(warehouse),
            "spark.local.dir": str(tmp_path_factory.mktemp("spark-local")),
        },
    )
    yield session
    session.stop()


def digits_config(data_root: Path, run_root: Path | None = None, *overrides: str):
    from pipeline.config import load_config

    base = [f"data.root={data_root}", f"data.source.path={DIGITS_CSV}"]
    if run_root is not None:
        base.append(f"run.root={run_root}")
    return load_config(DIGITS_CONF, [*base, *overrides])


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory):
    """A real S3 server (SeaweedFS) on 127.0.0.1 with one bucket, for the whole session."""
    from tests.objectstore import SeaweedFS

    store = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield store
    store.stop()


@pytest.fixture
def s3_env(s3_store, monkeypatch):
    """This process pointed at ``s3_store`` through the standard AWS variables."""
    for key, value in s3_store.env().items():
        monkeypatch.setenv(key, value)
    return s3_store


@pytest.fixture(scope="session")
def digits_version(spark, tmp_path_factory):
    """The real digits CSV prepared by the real Spark job: (version_dir, manifest)."""
    from pipeline.prep import prepare

    root = tmp_path_factory.mktemp("data")
    result = prepare(digits_config(root), spark)
    return Path(result.version_dir), result.manifest
