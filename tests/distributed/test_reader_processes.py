"""Two real processes read the same epoch: disjoint shares, equal batch counts."""
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.dist


def test_two_processes_read_disjoint_equal_shares(digits_version, tmp_path):
    version_dir, manifest = digits_version
    procs = [
        subprocess.Popen([sys.executable, str(REPO / "tests/distributed/read_share.py"), str(version_dir), str(r), "2", "24", str(tmp_path / f"{r}.json")],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    shares = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    assert shares[0]["len"] == shares[1]["len"] == len(shares[0]["batches"]) == len(shares[1]["batches"])
    ids = [set(i for b in s["batches"] for i in b) for s in shares]
    assert not ids[0] & ids[1]
    total = manifest["splits"]["train"]["rows"]
    assert total - len(ids[0]) - len(ids[1]) == total % (2 * 24)
