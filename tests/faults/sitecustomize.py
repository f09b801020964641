"""Fault injection for the crash tests: with this directory on PYTHONPATH, every Python
process (the driver and Spark's Python workers) imports this file at start. It does
nothing unless ``PIPELINE_TEST_KILL_AT`` names a point, and then SIGKILLs the process
there -- a real kill, as a crash or an OOM killer would deliver, not a Python exception.

Points (``PIPELINE_TEST_MARKS`` names a directory where each kill leaves a note first):
  task-write  a Spark task, first attempt of partition 0, after its first Parquet write
              (its file is half written, without a footer); the retry is not killed
  tasks       the prepare driver, while the val split's Spark job runs
  commit      the prepare driver, after the first committed file was moved into place
  manifest    the prepare driver, in the middle of writing manifest.json
  latest      the prepare driver, after the manifest, before LATEST
  rank-error  training rank PIPELINE_TEST_RANK: its readers fail to open (a ShardError), as
              when a shard is missing on that rank's host only
  rank-hang   training rank PIPELINE_TEST_RANK: its reader blocks forever on a FIFO from its
              5th row group on, as on a hung filesystem (not a kill: the process stays)
"""
import os
import signal

POINT = os.environ.get("PIPELINE_TEST_KILL_AT", "")


def _die(note: str) -> None:
    marks = os.environ.get("PIPELINE_TEST_MARKS")
    if marks:
        os.makedirs(marks, exist_ok=True)
        with open(os.path.join(marks, f"{os.getpid()}-{POINT}"), "w") as f:
            f.write(note)
            f.flush()
            os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def _patch_task_write() -> None:
    import pyarrow.parquet as pq

    original = pq.ParquetWriter.write_table

    def write_table(self, table, *args, **kwargs):
        original(self, table, *args, **kwargs)
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None and ctx.partitionId() == 0 and ctx.attemptNumber() == 0:
            _die(f"stage {ctx.stageId()} partition 0 attempt 0 task {ctx.taskAttemptId()} after {table.num_rows} rows")

    pq.ParquetWriter.write_table = write_table


def _patch_driver() -> None:
    import contextlib
    import threading
    import time

    from pipeline import storage
    from pipeline.prep import output, publish

    if POINT == "tasks":
        original_write = output.Staging.write

        def write(self, df, rel_dir, **kwargs):
            if rel_dir != "val":
                return original_write(self, df, rel_dir, **kwargs)
            threading.Thread(target=original_write, args=(self, df, rel_dir), kwargs=kwargs, daemon=True).start()
            time.sleep(0.3)
            _die("during the val split's Spark job")

        output.Staging.write = write
    elif POINT == "commit":
        def move_all(pairs, threads=8):
            storage.move(*pairs[0])
            _die(f"after moving {pairs[0][1]}")

        storage.move_all = move_all
    elif POINT == "manifest":
        original_open = storage.open_output

        @contextlib.contextmanager
        def open_output(location):
            with original_open(location) as f:
                if not location.endswith("manifest.json"):
                    yield f
                    return
                real_write = f.write

                def half_then_die(data):
                    real_write(data[: len(data) // 2])
                    f.flush()
                    _die(f"half of {location} written")

                f.write = half_then_die
                yield f

        storage.open_output = open_output
    elif POINT == "latest":
        def point_latest(dataset_dir, version_dir):
            _die(f"{version_dir} published, LATEST not yet written")

        publish.point_latest = point_latest


def _this_rank() -> bool:
    return os.environ.get("HOROVOD_RANK", os.environ.get("RANK")) == os.environ.get("PIPELINE_TEST_RANK", "1")


def _patch_rank() -> None:
    import time

    from pipeline.data import groups, reader

    if POINT == "rank-error":
        original_check = reader.ShardReader._check_files

        def check_files(self, verify):
            if self.split == "train":
                raise groups.ShardError(f"{self.version_dir}/train/part-00000.parquet: shard listed in the manifest is "
                                        "missing (injected on this rank only)")
            return original_check(self, verify)

        reader.ShardReader._check_files = check_files
        return
    original_load = groups.GroupFetcher._load
    loads = [0]

    def load(self, g):
        loads[0] += 1
        if loads[0] == 5:
            fifo = os.path.join(os.environ["PIPELINE_TEST_MARKS"], "hung.fifo")
            os.makedirs(os.path.dirname(fifo), exist_ok=True)
            with open(os.path.join(os.environ["PIPELINE_TEST_MARKS"], "hung-at"), "w") as f:
                f.write(str(time.time()))
            os.mkfifo(fifo)
            open(fifo).read()  # no writer ever comes: blocks here
        return original_load(self, g)

    groups.GroupFetcher._load = load


if POINT == "task-write":
    _patch_task_write()
elif POINT in ("rank-error", "rank-hang") and _this_rank():
    _patch_rank()
elif POINT in ("tasks", "commit", "manifest", "latest") and "PYTHON_WORKER_FACTORY_SECRET" not in os.environ:
    _patch_driver()
