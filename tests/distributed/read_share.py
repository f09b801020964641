"""One rank of the 2-process reader test: read an epoch's share, write its row ids.

    read_share.py VERSION_DIR RANK WORLD BATCH OUT.json
"""
import json
import sys

from pipeline.data import ShardReader

version_dir, rank, world, batch, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
reader = ShardReader(version_dir, "train", rank, world, batch, seed=11, shuffle_buffer=128)
reader.set_epoch(3)
batches = [b["row_id"].tolist() for b in reader]
with open(out, "w") as f:
    json.dump({"len": len(reader), "batches": batches}, f)
