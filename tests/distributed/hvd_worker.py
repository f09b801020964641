"""Run by each of 2 Horovod ranks in tests/distributed: train, then record what the test checks.

    hvd_worker.py OUT_DIR --config conf/X.yaml [key=value ...]
"""
import sys

import torch
import torch.nn.functional as F

from pipeline.config import load_config
from pipeline.engines import make_collective
from pipeline.schema import LABEL_COLUMN
from pipeline.train import Trainer


def main(out_dir: str, config: str, overrides: list[str]) -> None:
    cfg = load_config(config, overrides)
    coll = make_collective(cfg.dist)
    trainer = Trainer(cfg, coll)
    result = trainer.fit()
    # By hand, with the final model: this rank's share of the validation split.
    model = trainer.model.eval()
    local = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for batch in trainer.eval_readers["val"]:
            logits = model(batch)
            y = batch[LABEL_COLUMN]
            local += torch.tensor([F.cross_entropy(logits, y, reduction="sum").item(), (logits.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64)
    reduced = coll.allreduce_sum(local, name="test.val")
    torch.save(
        {
            "rank": coll.rank,
            "size": coll.size,
            "threads": torch.get_num_threads(),
            "params": {k: v.detach().clone() for k, v in model.named_parameters()},
            "buffers": {k: v.detach().clone() for k, v in model.named_buffers()},
            "local": local,
            "reduced": reduced,
            "report": result.report,
            "run_dir": str(result.run_dir),
        },
        f"{out_dir}/rank{coll.rank}.pt",
    )
    coll.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[3], sys.argv[4:])
