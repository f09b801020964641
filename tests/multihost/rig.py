"""Driving the multi-host rig (deploy/local/multihost.sh) from tests: run commands on its
nodes, read the store and the Spark master from inside, kill whole hosts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = str(REPO / "deploy" / "local" / "multihost.sh")
BIN = Path(sys.executable).parent
BUCKET = "rig-data"


class Rig:
    """One rig: its namespaces, services and state directory."""

    def __init__(self, name: str, state: Path, nodes: int = 3, services: str = "store spark ssh"):
        self.env = {**os.environ, "RIG_NAME": name, "RIG_DIR": str(state), "RIG_NODES": str(nodes), "RIG_SERVICES": services,
                    "PYTHON": sys.executable}
        self.state, self.nodes = state, [f"n{i}" for i in range(1, nodes + 1)]

    def script(self, *args: str, timeout: float = 300, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["bash", SCRIPT, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if ok and proc.returncode != 0:
            pytest.fail(f"multihost.sh {' '.join(args[:3])} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}")
        return proc

    def up(self) -> None:
        self.script("down", timeout=120)  # whatever a crashed session left
        self.script("up", timeout=300)

    def down(self) -> None:
        self.script("down", timeout=120)

    def addr(self, node: str) -> str:
        return self.script("addr", node).stdout.strip()

    def argv(self, node: str, *command: str, env: dict | None = None) -> list[str]:
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return ["bash", SCRIPT, "exec", node, "env", f"--chdir={REPO}", *extra, *command]

    def run(self, node: str, *command: str, env: dict | None = None, timeout: float = 900, ok: bool = True) -> subprocess.CompletedProcess:
        """``command`` on ``node`` in the repository (every node sees it read-only)."""
        proc = subprocess.run(self.argv(node, *command, env=env), env=self.env, capture_output=True, text=True, timeout=timeout)
        if ok and proc.returncode != 0:
            pytest.fail(f"on {node}: {' '.join(command[:4])} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-5000:]}")
        return proc

    def popen(self, node: str, *command: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.argv(node, *command, env=env), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def python(self, node: str, code: str, *args: str) -> str:
        return self.run(node, sys.executable, "-c", code, *args).stdout

    def read_text(self, uri: str, node: str = "n1") -> str:
        """An object's text, read from a node (only nodes reach the store)."""
        return self.python(node, "import sys; from pipeline import storage; sys.stdout.write(storage.read_text(sys.argv[1]))", uri)

    def read_json(self, uri: str) -> dict:
        return json.loads(self.read_text(uri))

    def keys(self, uri: str) -> list[str]:
        code = "import sys, json; from pipeline import storage; print(json.dumps([storage.relative(e.uri, sys.argv[1]) for e in storage.list_files(sys.argv[1])]))"
        return json.loads(self.python("n1", code, uri))

    def master_json(self) -> dict:
        url = f"http://{self.addr('n1')}:8080/json/"
        return json.loads(self.python("n1", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())", url))

    def event_log(self, app_id: str, node: str = "n1") -> list[dict]:
        """The Spark event log the driver on ``node`` wrote for ``app_id``."""
        path = self.state / "nodes" / node / "spark-events" / app_id
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def kill(self, node: str) -> None:
        self.script("kill", node)

    def start(self, node: str, service: str) -> None:
        self.script("start", node, service, timeout=120)


def spark_submit(*args: str) -> tuple[str, ...]:
    return (str(BIN / "spark-submit"), *args)


def last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.strip().splitlines()[-1]


def task_executors(events: list[dict]) -> list[tuple[str, str]]:
    """(executor id, host) of every finished task in an event log."""
    return [(e["Task Info"]["Executor ID"], e["Task Info"]["Host"]) for e in events if e["Event"] == "SparkListenerTaskEnd"]
