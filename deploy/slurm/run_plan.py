"""Which run a (re)started Slurm training job trains, printed as the arguments to add.

    python -m pipeline train --config C [key=value ...] --print-config \
        | python deploy/slurm/run_plan.py --name NAME --restart N --engine horovod|torch

Reads the resolved config (YAML) on stdin, so ``run.root`` and ``run.name`` are whatever
the file and the overrides say (a path or a URI). Prints one argument per line:
``run.name=<name>``, then ``--resume`` when that run has a checkpoint to continue from.

- First start (restart 0): the run named ``run.name``, or NAME when the config names none.
- Restart k (requeued after a pre-emption, the time-limit warning or a node failure): the
  newest of NAME, NAME-r1 .. NAME-r<k> that has a checkpoint, resumed. When none has one
  (stopped before its first checkpoint), a fresh run: NAME while no earlier attempt claimed
  it, else NAME-r<k>, since a claimed run directory can only be continued with --resume,
  and --resume needs a checkpoint.
"""
from __future__ import annotations

import argparse
import sys

import yaml

from pipeline import storage
from pipeline.train.checkpoint import checkpoint_files
from pipeline.train.run_dir import OWNER_NAME

LAUNCHERS = {"horovod": "deploy/slurm/train.sbatch", "torch": "deploy/slurm/train-torch.sbatch"}


def plan(cfg: dict, name: str, restart: int) -> list[str]:
    """The arguments that pick the run (see the module docstring)."""
    root = cfg["run"]["root"]
    name = cfg["run"].get("name") or name
    attempts = [name] + [f"{name}-r{k}" for k in range(1, restart + 1)]
    if restart > 0:
        for attempt in reversed(attempts):
            if checkpoint_files(storage.join(root, attempt)):
                return [f"run.name={attempt}", "--resume"]
    if restart > 0 and storage.exists(storage.join(root, name, OWNER_NAME)):
        return [f"run.name={attempts[-1]}"]
    return [f"run.name={name}"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the run's name when the config sets no run.name")
    parser.add_argument("--restart", type=int, default=0, help="SLURM_RESTART_COUNT")
    parser.add_argument("--engine", choices=sorted(LAUNCHERS), required=True, help="the engine the script launches")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(sys.stdin)
    engine = cfg["dist"]["engine"]
    if engine != args.engine:
        other = LAUNCHERS.get(engine)
        fix = f"submit {other} instead" if other else f"set dist.engine={args.engine}"
        print(f"error: the config says dist.engine={engine}, but {LAUNCHERS[args.engine]} starts {args.engine} ranks; {fix}",
              file=sys.stderr)
        return 2
    print("\n".join(plan(cfg, args.name, args.restart)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
