"""Run a launcher (horovodrun, torchrun) as a child process: stream its output, keep the
tail for the error message, and find the run directory rank 0 printed last."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from pipeline import storage
from pipeline.launch.horovod import LaunchError

# horovodrun prefixes each rank's lines, e.g. "[0]<stdout>:" or "[1,0]<stdout>:".
_PREFIX = re.compile(r"^\[[\d,]+\]<std(?:out|err)>:")


def run_launcher(argv: list[str], what: str, cwd: str | Path | None = None, env: dict | None = None,
                 diagnose: Callable[[], str] | None = None) -> str:
    """Run ``argv``, echoing its output (the ranks' own error lines among it); return the
    run directory it reported.

    Raises:
        LaunchError: one line: non-zero exit (with what ``diagnose()`` finds, e.g. a lost
            host), or no run directory printed.
    """
    run_dir = None
    with subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            candidate = _PREFIX.sub("", line).strip()
            if _looks_like_run_dir(candidate):
                run_dir = candidate
        code = proc.wait()
    if code != 0:
        cause = diagnose() if diagnose is not None else ""
        raise LaunchError(f"{what} exited with status {code}{': ' + cause if cause else ''}; the ranks' output is above")
    if run_dir is None:
        raise LaunchError(f"{what} finished but printed no run directory; its output is above")
    return run_dir


def _looks_like_run_dir(text: str) -> bool:
    """A line that is a bare absolute path or URI holding a report.json."""
    if not text or " " in text or not (os.path.isabs(text) or storage.scheme(text)):
        return False
    try:
        return storage.is_file(storage.join(text, "report.json"))
    except (storage.StorageError, ValueError, OSError):
        return False
