"""Everything on a real S3 server (SeaweedFS on 127.0.0.1), no shared disk assumed:
the digits job end to end with data.root, run.root and the score output on s3://; a Spark
task attempt SIGKILLed mid-write; prepare SIGKILLed before, during and after its manifest
write; resume from a checkpoint on the store; a wrong secret.

Inputs come from a local path (every node of a real cluster would read it through Spark's
own filesystem layer); every output goes to the store.
"""
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from pipeline import storage
from pipeline.manifest import ManifestError, read_manifest
from tests.conftest import DIGITS_CONF, DIGITS_CSV, REPO, digits_config

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.s3]
FAULTS = REPO / "tests" / "faults"


def cli(args, env, cwd=REPO, ok=True, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if ok and proc.returncode != 0:
        pytest.fail(f"pipeline {args[0]} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def store_env(store, **extra):
    return {**os.environ, **store.env(), **extra}


def last_line(proc) -> str:
    return proc.stdout.strip().splitlines()[-1]


def version_keys(store, version_uri: str) -> list[str]:
    return store.keys(version_uri.split(f"s3://{store.bucket}/", 1)[1])


def assert_complete(store, version_uri: str) -> dict:
    """The version holds its manifest and exactly the files it names, each with the
    recorded size and sha256; nothing staged is left."""
    _, manifest = read_manifest(version_uri)
    prefix = version_uri.split(f"s3://{store.bucket}/", 1)[1] + "/"
    named = [s["path"] for split in manifest["splits"].values() for s in split["shards"]]
    named += [f["path"] for f in manifest["rejected"]["files"]] or ["rejected/part-00000.parquet"]
    assert [k[len(prefix):] for k in version_keys(store, version_uri)] == sorted([*named, "manifest.json"])
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            location = storage.join(version_uri, shard["path"])
            assert storage.info(location).size == shard["bytes"]
            assert storage.sha256(location) == shard["sha256"]
    return manifest


class CmdlineWatch:
    """Samples every process's command line while a job runs, recording any holding ``needle``."""

    def __init__(self, needle: str):
        self.needle, self.found, self.samples = needle.encode(), [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.2):
            self.samples += 1
            for proc in Path("/proc").iterdir():
                try:
                    line = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if self.needle in line:
                    self.found.append(line.replace(b"\0", b" ")[:300])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.mark.dist
def test_digits_end_to_end_with_every_output_on_the_store(s3_env, tmp_path):
    s3_store = s3_env
    env = store_env(s3_store)
    work = tmp_path / "work"  # the jobs' working directory: nothing may land here
    work.mkdir()
    data = [f"data.root={s3_store.uri('e2e', 'data')}", f"data.source.path={DIGITS_CSV}"]
    prepared = cli(["prepare", "--config", str(DIGITS_CONF), *data], env, cwd=work)
    version = last_line(prepared)
    assert version.startswith(s3_store.uri("e2e", "data", "digits", "v-"))
    manifest = assert_complete(s3_store, version)
    assert storage.read_text(s3_store.uri("e2e", "data", "digits", "LATEST")).strip() == storage.basename(version)

    runs = s3_store.uri("e2e", "runs")
    with CmdlineWatch(s3_store.secret_key) as watch:
        trained = cli(["train", "--config", str(DIGITS_CONF), "--np", "2", *data, f"run.root={runs}", "run.name=s3run",
                       "train.epochs=4", "train.checkpoint_every_steps=20"], env, cwd=work)
    run_dir = last_line(trained)
    assert run_dir == storage.join(runs, "s3run")
    assert watch.samples > 5 and watch.found == [], f"the secret appeared on a command line: {watch.found[:2]}"
    report = json.loads(storage.read_text(storage.join(run_dir, "report.json")))
    assert report["world_size"] == 2 and report["engine"] == "horovod" and report["test_accuracy"] >= 0.9
    assert report["dataset_version"] == version and report["dataset_fingerprint"] == manifest["fingerprint"]
    run_keys = s3_store.keys("e2e/runs/s3run")
    for name in ("config.yaml", "metrics.jsonl", "model.pt", "report.json", "curves.png"):
        assert f"e2e/runs/s3run/{name}" in run_keys
    assert any(k.startswith("e2e/runs/s3run/checkpoints/step-") for k in run_keys)
    assert len(storage.read_text(storage.join(run_dir, "metrics.jsonl")).splitlines()) == 4

    output = s3_store.uri("e2e", "scored")
    scored = cli(["score", "--config", str(DIGITS_CONF), *data, "--model", storage.join(run_dir, "model.pt"),
                  "--input", str(DIGITS_CSV), "--output", output], env, cwd=work)
    assert last_line(scored) == output
    metrics = json.loads(storage.read_text(storage.join(output, "metrics.json")))
    assert metrics["scored_rows"] == 1797 and metrics["accuracy"] >= 0.9 and metrics["rejected_rows"] == 0
    predictions = [f["path"] for f in metrics["files"]["predictions"]]
    assert sum(f["rows"] for f in metrics["files"]["predictions"]) == 1797
    assert sorted(k[len("e2e/scored/"):] for k in s3_store.keys("e2e/scored")) == sorted(
        [*predictions, "metrics.json", "rejected/part-00000.parquet"])
    with storage.open_input(storage.join(output, predictions[0])) as f:
        assert pq.read_table(f).num_rows == metrics["files"]["predictions"][0]["rows"]
    refused = cli(["score", "--config", str(DIGITS_CONF), *data, "--model", storage.join(run_dir, "model.pt"),
                   "--input", str(DIGITS_CSV), "--output", output], env, cwd=work, ok=False)
    assert refused.returncode != 0 and "already exists" in refused.stderr

    assert [p for p in work.rglob("*")] == [], "every output went to the store"
    for text in (prepared.stdout + prepared.stderr, trained.stdout + trained.stderr, scored.stdout + scored.stderr,
                 storage.read_text(storage.join(run_dir, "config.yaml")), storage.read_text(storage.join(run_dir, "report.json")),
                 storage.read_text(storage.join(version, "manifest.json")), json.dumps(metrics)):
        assert s3_store.secret_key not in text


def test_a_task_attempt_killed_mid_write_leaves_exactly_one_copy(s3_env, digits_version, tmp_path):
    """Spark re-runs the killed task; the version holds one copy of each shard, byte for
    byte what an undisturbed prepare writes."""
    s3_store = s3_env
    marks = tmp_path / "marks"
    env = store_env(s3_store, PYTHONPATH=str(FAULTS), PIPELINE_TEST_KILL_AT="task-write", PIPELINE_TEST_MARKS=str(marks),
                    PYSPARK_SUBMIT_ARGS="--master local[2,2] pyspark-shell")  # 2 attempts per task
    data = [f"data.root={s3_store.uri('retry', 'data')}", f"data.source.path={DIGITS_CSV}"]
    version = last_line(cli(["prepare", "--config", str(DIGITS_CONF), *data], env))
    kills = sorted(p.read_text() for p in marks.iterdir())
    assert len(kills) == 3 and all("partition 0 attempt 0" in k for k in kills), kills  # train, val and test
    manifest = assert_complete(s3_store, version)
    undisturbed = digits_version[1]
    assert manifest["fingerprint"] == undisturbed["fingerprint"]
    for split, info in manifest["splits"].items():
        assert [(s["path"], s["rows"], s["sha256"]) for s in info["shards"]] == [
            (s["path"], s["rows"], s["sha256"]) for s in undisturbed["splits"][split]["shards"]]


def test_prepare_killed_before_during_and_after_its_manifest_write(s3_env, tmp_path):
    """Each SIGKILL leaves no version or a complete one; the next prepare cleans up (and says
    so), and the last one finds the version complete and points LATEST at it."""
    s3_store = s3_env
    data = [f"data.root={s3_store.uri('crash', 'data')}", f"data.source.path={DIGITS_CSV}"]
    dataset = s3_store.uri("crash", "data", "digits")
    version = None
    for point in ("tasks", "commit", "manifest", "latest"):
        env = store_env(s3_store, PYTHONPATH=str(FAULTS), PIPELINE_TEST_KILL_AT=point, PIPELINE_TEST_MARKS=str(tmp_path / point))
        proc = cli(["prepare", "--config", str(DIGITS_CONF), *data], env, ok=False)
        assert proc.returncode == -9 and len(list((tmp_path / point).iterdir())) == 1, (point, proc.stderr[-2000:])
        if point != "tasks":  # an earlier kill left an unfinished version: this run removed it first
            assert "an unfinished prepare left it without a manifest" in proc.stderr, point
        versions = storage.list_dirs(dataset)
        assert len(versions) == 1, (point, versions)  # leftovers of this run's own version only
        version = versions[0]
        assert not storage.exists(storage.join(dataset, "LATEST")), point
        if point == "latest":
            assert_complete(s3_store, version)
        else:
            with pytest.raises(ManifestError, match="unfinished prepare"):
                read_manifest(version)
            assert s3_store.keys(version.split(f"s3://{s3_store.bucket}/", 1)[1] + "/manifest.json") == []
    again = cli(["prepare", "--config", str(DIGITS_CONF), *data], store_env(s3_store))
    assert last_line(again) == version and "unchanged, nothing published" in again.stdout
    assert storage.read_text(storage.join(dataset, "LATEST")).strip() == storage.basename(version)
    assert_complete(s3_store, version)


def upload_tree(local: Path, uri: str) -> None:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.upload(str(path), storage.join(uri, path.relative_to(local).as_posix()))


def test_resume_from_a_checkpoint_on_the_store_is_exact(s3_env, digits_version, tmp_path):
    from pipeline.train.checkpoint import checkpoint_files
    from pipeline.train.worker import train_rank

    store = s3_env
    version_dir, _ = digits_version
    data_root = store.uri("resume", "data")
    upload_tree(version_dir, storage.join(data_root, "digits", version_dir.name))  # a version is relocatable
    runs = store.uri("resume", "runs")
    base = ["dist.engine=single", "train.epochs=2", "train.batch_size=32", "train.checkpoint_every_steps=10",
            "train.keep_checkpoints=100", "model.dropout=0.2", f"data.version={version_dir.name}"]
    whole = train_rank(digits_config(data_root, runs, *base, "run.name=whole"))
    assert whole["run_dir"] == storage.join(runs, "whole")
    # What a run killed just after checkpoint 30 leaves on the store, plus a newer checkpoint cut short.
    stopped = storage.join(runs, "resumed")
    for name in ("config.yaml", "metrics.jsonl"):
        storage.write_bytes(storage.join(stopped, name), storage.read_bytes(storage.join(runs, "whole", name)))
    for location in checkpoint_files(storage.join(runs, "whole")):
        if int(storage.basename(location)[5:14]) <= 30:
            storage.write_bytes(storage.join(stopped, "checkpoints", storage.basename(location)), storage.read_bytes(location))
    storage.write_bytes(storage.join(stopped, "checkpoints", "step-000000031.pt"), b"truncated")
    resumed = train_rank(digits_config(data_root, runs, *base, "run.name=resumed"), resume=True)
    assert resumed["report"]["resumed_from"] == storage.join(stopped, "checkpoints", "step-000000030.pt")

    def weights(run):
        return torch.load(io.BytesIO(storage.read_bytes(storage.join(runs, run, "model.pt"))), weights_only=True)["state_dict"]

    for name, tensor in weights("whole").items():
        assert torch.equal(tensor, weights("resumed")[name]), f"{name} differs after resume from the store"
    assert resumed["report"]["test_accuracy"] == whole["report"]["test_accuracy"]


@pytest.mark.parametrize("command", ["prepare", "train"])
def test_a_wrong_secret_gives_one_line_naming_endpoint_and_bucket(s3_store, command, tmp_path):
    env = {**store_env(s3_store), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    args = [command, "--config", str(DIGITS_CONF), f"data.root={s3_store.uri('denied')}", f"data.source.path={DIGITS_CSV}"]
    if command == "train":
        args += ["--np", "1", "dist.engine=single", f"run.root={tmp_path}"]
    proc = cli(args, env, ok=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith("error: ") and s3_store.endpoint in lines[-1] and repr(s3_store.bucket) in lines[-1]
    assert "AWS_SECRET_ACCESS_KEY" in lines[-1] and "not-the-secret" not in proc.stderr


def test_the_reader_streams_from_the_store_and_its_cache_keeps_checked_shards(s3_env, digits_version, tmp_path):
    from pipeline.data import ShardReader
    from pipeline.data.cache import CacheError, ShardCache

    store = s3_env
    version_dir, manifest = digits_version
    remote = store.uri("reader", "digits", version_dir.name)
    upload_tree(version_dir, remote)

    def batches(dataset, **kwargs):
        return [{k: v.clone() for k, v in b.items()} for b in ShardReader(dataset, "train", 0, 1, 64, seed=1, **kwargs)]

    local = batches(str(version_dir))
    streamed = batches(remote)
    cache = ShardCache(str(tmp_path / "cache"), max_bytes=1 << 30)
    cached = batches(remote, cache=cache)
    for a, b, c in zip(local, streamed, cached, strict=True):
        assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    shards = manifest["splits"]["train"]["shards"]
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.parquet")) == sorted(f"{s['sha256']}.parquet" for s in shards)
    inodes = {p.name: p.stat().st_ino for p in (tmp_path / "cache").glob("*.parquet")}
    batches(remote, cache=cache)  # a second epoch's reader: served from the cache, nothing downloaded again
    assert {p.name: p.stat().st_ino for p in (tmp_path / "cache").glob("*.parquet")} == inodes

    small = ShardCache(str(tmp_path / "small"), max_bytes=shards[0]["bytes"] + 1)  # room for about one shard
    batches(remote, cache=small)
    assert len(list((tmp_path / "small").glob("*.parquet"))) == 1

    # Same size, other bytes: the download is refused before anything is read from it.
    victim = storage.join(remote, shards[0]["path"])
    data = bytearray(storage.read_bytes(victim))
    data[len(data) // 2] ^= 0xFF
    storage.write_bytes(victim, bytes(data))
    with pytest.raises(CacheError, match=rf"{shards[0]['path']}: downloaded bytes have sha256 .* re-run prepare"):
        batches(remote, cache=ShardCache(str(tmp_path / "fresh"), max_bytes=1 << 30))
