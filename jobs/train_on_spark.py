"""Spark job: train with one Horovod rank per Spark task (horovod.spark.run, Gloo).

    spark-submit jobs/train_on_spark.py --config conf/digits_cnn.yaml --np 2 [--resume] [key=value ...]

Same as ``python -m pipeline train --launcher spark``; the master comes from spark-submit
(local[*] if unset) and needs at least N free task slots. The dataset version and
``run.root`` must be on storage every executor sees. The last line is the run directory.
"""
import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--launcher", "spark", *sys.argv[1:]]))
