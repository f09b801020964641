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


if POINT == "task-write":
    _patch_task_write()
elif POINT in ("tasks", "commit", "manifest", "latest") and "PYTHON_WORKER_FACTORY_SECRET" not in os.environ:
    _patch_driver()
