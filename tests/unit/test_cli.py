"""The command line itself: --print-config on every command that takes a config."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pipeline.config import load_config, to_dict
from tests.conftest import DIGITS_CONF, REPO


def _print_config(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["prepare"], ["train", "--np", "2"], ["run"], ["score"]])
def test_print_config_is_the_resolved_config_and_runs_nothing(command, tmp_path):
    out = _print_config(*command, "--config", str(DIGITS_CONF), "--print-config", "train.epochs=7", f"run.root={tmp_path}/runs")
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["train"]["epochs"] == 7
    assert printed["run"]["root"] == f"{tmp_path}/runs"
    assert printed["data"]["root"] == str(REPO / "data")  # locations made absolute, as the command would use them
    # The printed YAML is a complete config: loading it gives the same config back.
    (tmp_path / "printed.yaml").write_text(out.stdout)
    assert to_dict(load_config(tmp_path / "printed.yaml")) == printed
    assert not (tmp_path / "runs").exists()


def test_print_config_rejects_an_unknown_key_in_one_line():
    out = _print_config("train", "--config", str(DIGITS_CONF), "--print-config", "train.bogus=1")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "unknown key 'train.bogus'" in out.stderr and "valid keys in train" in out.stderr
