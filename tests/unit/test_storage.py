"""pipeline.storage on local paths and on a real fsspec filesystem (memory://); the S3 side
is exercised against a real server in tests/e2e/test_object_store.py."""
import json
import os
import stat
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.launch.secrets import FILE_VARIABLE, environ_replaced, load_secrets, secrets_in_file


def test_locations_join_and_split_alike_for_paths_and_uris(tmp_path, monkeypatch):
    assert storage.join("s3://b", "x", "y.parquet") == "s3://b/x/y.parquet"
    assert storage.join("s3://b/p/", "x") == "s3://b/p/x"
    assert storage.join("/d", "x") == "/d/x"
    assert storage.parent("s3://b/p/x") == "s3://b/p" and storage.parent("/d/x") == "/d"
    assert storage.basename("gs://b/p/v-1/") == "v-1"
    assert storage.relative("s3://b/p/x/y", "s3://b/p") == "x/y"
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("data") == str(tmp_path / "data")
    assert storage.absolute("s3a://b/data") == "s3a://b/data"
    assert storage.scheme("S3://b") == "s3" and storage.is_local("file:///x") and not storage.is_local("hdfs://nn/x")
    with pytest.raises(storage.StorageError, match=r"s3://\*\*\*@b/x: credentials inside a URI are refused"):
        storage.absolute("s3://AKIA:SECRET@b/x")


def test_open_output_is_all_or_nothing_on_a_local_disk(tmp_path):
    target = tmp_path / "sub" / "report.json"
    storage.write_text(str(target), "old")
    with pytest.raises(RuntimeError):
        with storage.open_output(str(target)) as f:
            f.write(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["report.json"]
    storage.write_text(str(target), "new")
    assert target.read_text() == "new" and storage.read_text(str(target)) == "new"


def test_listing_globbing_and_moving(tmp_path):
    for rel in ("a/x.ts", "a/b/y.ts", "a/b/z.csv", "a/_tmp/w.ts", "a/.hidden.ts"):
        storage.write_text(str(tmp_path / rel), rel)
    base = str(tmp_path / "a")
    names = lambda entries: [storage.relative(e.uri, base) for e in entries]  # noqa: E731
    assert names(storage.list_files(base, hidden=False)) == ["b/y.ts", "b/z.csv", "x.ts"]
    assert len(storage.list_files(base)) == 5 and storage.list_files(str(tmp_path / "nope")) == []
    assert names(storage.glob(f"{base}/*.ts")) == [".hidden.ts", "x.ts"]  # * stays within one level
    assert names(storage.glob(f"{base}/**/*.ts")) == [".hidden.ts", "_tmp/w.ts", "b/y.ts", "x.ts"]
    assert names(storage.glob(f"{base}/b/[yz].*")) == ["b/y.ts", "b/z.csv"]
    assert storage.list_dirs(base) == [f"{base}/_tmp", f"{base}/b"]
    storage.move_all([(f"{base}/x.ts", f"{base}/moved/x.ts")])
    assert storage.read_text(f"{base}/moved/x.ts") == "a/x.ts" and not storage.exists(f"{base}/x.ts")
    assert storage.sizes([f"{base}/moved/x.ts", f"{base}/gone"]) == [6, None]
    storage.delete_dir(base)
    assert not storage.exists(base)


def test_schemes_pyarrow_lacks_go_through_fsspec():
    root = "memory://pipeline-test/run"
    storage.write_text(f"{root}/report.json", json.dumps({"ok": 1}))
    with storage.open_output(f"{root}/model.pt") as f:
        f.write(b"\x00" * 10)
    assert json.loads(storage.read_text(f"{root}/report.json")) == {"ok": 1}
    assert [e.uri for e in storage.list_files(root)] == [f"{root}/model.pt", f"{root}/report.json"]
    storage.move(f"{root}/model.pt", f"{root}/final/model.pt")
    assert storage.sizes([f"{root}/final/model.pt"]) == [10]
    storage.delete_dir(root)
    assert storage.list_files(root) == []
    with pytest.raises(storage.StorageError, match="no filesystem for nosuch://"):
        storage.exists("nosuch://x/y")


def test_secrets_travel_in_a_private_file_not_in_the_environment(monkeypatch):
    env = {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": "tok", "AWS_REGION": "eu-west-1",
           "HOROVOD_SECRET_KEY": "hvd", "PATH": "/bin"}
    before = dict(os.environ)
    with secrets_in_file(env) as clean:
        assert "s3cr3t" not in json.dumps(clean) and "tok" not in json.dumps(clean)
        assert clean["AWS_REGION"] == "eu-west-1" and clean["HOROVOD_SECRET_KEY"] == "hvd"
        path = clean[FILE_VARIABLE]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with environ_replaced(clean):
            assert "AWS_SECRET_ACCESS_KEY" not in os.environ
            load_secrets()  # what a rank does at start
            assert os.environ["AWS_SECRET_ACCESS_KEY"] == "s3cr3t"
        assert dict(os.environ) == before  # restored afterwards
    assert not os.path.exists(path)


_EXIT_ORDER = """
import atexit
import pyarrow.fs  # registers pyarrow's S3 finalizer: it runs after every handler registered later
from pipeline import storage
atexit.register(lambda: print("s3 filesystems cached when pyarrow finalizes S3:", storage._s3.cache_info().currsize, flush=True))
storage._s3("http://127.0.0.1:9", "us-east-1", None, ())  # registers the release, after the line above: runs before it
print("cached:", storage._s3.cache_info().currsize, flush=True)
"""


def test_cached_s3_filesystems_are_dropped_before_pyarrow_finalizes_s3():
    """A client destroyed after pyarrow shut the AWS SDK down can abort the process at exit."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _EXIT_ORDER], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["cached: 1", "s3 filesystems cached when pyarrow finalizes S3: 0"], done.stdout
