"""What every rank runs, whichever launcher started it (none, horovodrun, horovod.run, Spark)."""
from __future__ import annotations

import gc
import logging
import os

from pipeline.config import Config, from_dict
from pipeline.engines import make_collective
from pipeline.launch.secrets import load_secrets
from pipeline.train.preemption import Preempted, PreemptionWatch, leave_notice
from pipeline.train.trainer import Trainer


def setup_logging(rank: int) -> None:
    """Log lines prefixed with the rank, so interleaved output from ranks stays readable."""
    logging.basicConfig(
        level=os.environ.get("PIPELINE_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    # py4j (Spark's gateway) logs at INFO when it closes, possibly after the streams have.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def train_rank(cfg: Config | dict, resume: bool = False) -> dict:
    """Initialise this rank's engine, train (from the run's latest checkpoint when
    ``resume``), shut the engine down; return run dir and report.

    Takes a plain dict too, so launchers that pickle the call (horovod.run, Spark) ship
    data, not dataclasses.
    """
    load_secrets()  # credentials the launcher kept off this rank's command line
    if isinstance(cfg, dict):
        cfg = from_dict(cfg)
    # From the rank's start: a pre-emption warning during the rendezvous or while the data is
    # opened is remembered (and acted on at the first check), not the end of the process.
    preemption = PreemptionWatch(cfg.train.preemption_check_steps)
    collective = None
    try:
        collective = make_collective(cfg.dist, cfg.train.device)
        setup_logging(collective.rank)
        trainer = Trainer(cfg, collective, preemption=preemption)
        try:
            result = trainer.fit(resume=resume)
        except Preempted as err:
            leave_notice(err)
            raise
        # The DDP wrapper holds the process group: freed now (with any reference cycle it
        # sits in), not during the interpreter's teardown after the group was destroyed.
        del trainer
        gc.collect()
        # Every rank done before any tears its engine down: a Gloo process group destroyed
        # while a peer still talks to it aborted a rank at exit (SIGABRT, seen under DDP).
        collective.barrier()  # collective
        return {"run_dir": result.run_dir, "report": result.report, "is_root": collective.is_root}
    finally:
        if collective is not None:
            collective.shutdown()
        preemption.close()
