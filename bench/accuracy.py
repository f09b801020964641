"""Test accuracy of the shipped recipes on every shipped dataset, 2 Horovod ranks, 5 seeds.

    .venv/bin/python bench/accuracy.py [--seeds 5] [--only gunpoint_cnn,vowels_rnn]

Each case is prepared once by the real prepare job and trained with its shipped config
(``conf/<case>.yaml``, nothing overridden but ``train.seed`` and the paths) by 2 Horovod
ranks over Gloo. The goal is met when the fixed seed (0, the shipped one) reaches the
target; the spread over seeds (mean +- sd) is reported beside it. The published figures the
targets come from are in docs/benchmarks.md ("Accuracy"). Writes bench/results/accuracy.json, one
section per case with its own command, commit and time (``--only`` re-measures some cases
and keeps the others' figures and dates).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import goal, merge_section  # noqa: E402
from pipeline.config import load_config  # noqa: E402

# case (conf/<case>.yaml): target test accuracy of the shipped seed with 2 Horovod ranks
TARGETS = {
    "digits_cnn": 0.98,
    "gunpoint_cnn": 0.993,
    "vowels_rnn": 0.97,
    "vowels_cnn": 0.97,
    "synth_long_sequences_rnn": 0.95,
}


def prepare(config: Path, root: Path) -> str:
    cfg = load_config(config)
    overrides = [f"data.root={root}"]
    if cfg.data.source.path:
        overrides.append(f"data.source.path={REPO / cfg.data.source.path}")
    out = subprocess.run([sys.executable, "-m", "pipeline", "prepare", "--config", str(config), *overrides],
                         cwd=REPO, check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def train(config: Path, version: str, runs: Path, seed: int) -> dict:
    name = f"seed{seed}"
    argv = [sys.executable, "-m", "pipeline", "train", "--config", str(config), "--np", "2",
            f"data.root={Path(version).parent.parent}", f"data.version={Path(version).name}",
            f"run.root={runs}", f"run.name={name}", f"train.seed={seed}"]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{config.stem} seed {seed} failed:\n{proc.stderr[-3000:]}")
    report = json.loads((runs / name / "report.json").read_text())
    return {"seed": seed, "test_accuracy": report["test_accuracy"], "best_epoch": report["best_epoch"],
            "epochs": report["epochs"], "seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated cases (default: all)")
    args = parser.parse_args()
    cases = [c for c in args.only.split(",") if c] or list(TARGETS)
    for case in cases:
        config = REPO / "conf" / f"{case}.yaml"
        with tempfile.TemporaryDirectory(prefix=f"bench-accuracy-{case}-") as tmp:
            version = prepare(config, Path(tmp) / "data")
            runs = [train(config, version, Path(tmp) / "runs", seed) for seed in range(args.seeds)]
        accuracies = [r["test_accuracy"] for r in runs]
        figures = {
            "config": f"conf/{case}.yaml", "ranks": 2, "engine": "horovod", "runs": runs,
            "shipped_seed_accuracy": accuracies[0],
            "mean": round(statistics.fmean(accuracies), 4),
            "sd": round(statistics.stdev(accuracies), 4) if len(accuracies) > 1 else 0.0,
        }
        print(f"{case}: seed 0 {accuracies[0]:.4f}, {len(runs)} seeds {figures['mean']:.4f} +- {figures['sd']:.4f}", flush=True)
        merge_section("accuracy", case, figures, [goal(f"{case}: test accuracy, shipped seed, 2 ranks", accuracies[0], TARGETS[case])])


if __name__ == "__main__":
    main()
