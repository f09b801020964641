"""Training entry point that every rank runs (no launcher of its own).

    horovodrun -np 2 -H localhost:2 --gloo python jobs/train.py --config conf/digits_cnn.yaml
    python jobs/train.py --config conf/digits_cnn.yaml          # one process
    torchrun --nproc-per-node 2 jobs/train.py --config conf/digits_cnn.yaml dist.engine=torch
    ... --resume                                                # continue from the latest checkpoint
    sbatch / MPIJob / mpirun: the same command per rank

Rank 0 prints the run directory as its last line. Bad input (config, data, locations,
checkpoints) ends the rank with one ``error:`` line, not a traceback.
"""
import argparse
import signal
import sys

from pipeline.cli import parse_with_overrides, with_one_line_errors
from pipeline.config import load_config
from pipeline.train.worker import train_rank


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parse_with_overrides(parser, argv)

    def train() -> int:
        result = train_rank(load_config(args.config, args.overrides), resume=args.resume)
        # The run is complete: a pre-emption warning from here to the exit must not end this
        # rank with a signal (a scheduler would requeue a finished run).
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        if result["is_root"]:
            print(result["run_dir"])
        return 0

    return with_one_line_errors(train)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
