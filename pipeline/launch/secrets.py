"""Keeping credentials off rank command lines.

Horovod's launchers (``horovodrun``, ``horovod.run``) start each rank with a shell command
that spells out every exported environment variable (``... AWS_SECRET_ACCESS_KEY=...
python ...``): visible in ``ps``, ``/proc/*/cmdline`` and ``--verbose`` logs. So the
variables that hold secrets travel in a private file instead (mode 0600, removed when the
job ends), and each rank reads them back at start (:func:`load_secrets`).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from typing import Iterator, Mapping

FILE_VARIABLE = "PIPELINE_SECRETS_FILE"
_SECRET = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|PRIVATE_KEY", re.IGNORECASE)


def is_secret(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret (Horovod's own
    variables excluded: Horovod handles them)."""
    return bool(_SECRET.search(name)) and not name.startswith("HOROVOD_")


@contextlib.contextmanager
def secrets_in_file(env: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """``env`` without its secret variables, plus ``PIPELINE_SECRETS_FILE`` naming a private
    file that holds them, for the duration of the block."""
    secrets = {k: v for k, v in env.items() if is_secret(k)}
    clean = {k: v for k, v in env.items() if not is_secret(k)}
    if not secrets:
        yield clean
        return
    fd, path = tempfile.mkstemp(prefix="pipeline-secrets-", suffix=".json")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(secrets, f)
        yield {**clean, FILE_VARIABLE: path}
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def environ_replaced(env: Mapping[str, str]) -> Iterator[None]:
    """This process's environment is ``env`` for the block (for launchers such as
    ``horovod.runner.run`` that copy ``os.environ`` and take no ``env`` argument)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load_secrets() -> None:
    """In a rank: restore the launcher's secret variables into this process's environment."""
    path = os.environ.get(FILE_VARIABLE)
    if path and os.path.isfile(path):
        with open(path) as f:
            os.environ.update(json.load(f))
