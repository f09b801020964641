"""Spark job: raw data -> validated, sharded, published dataset version.

    spark-submit jobs/preprocess.py --config conf/digits_cnn.yaml [key=value ...]

Same as ``python -m pipeline prepare``; the master comes from spark-submit (local[*] if unset).
The last line of output is the published version directory.
"""
import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
