"""Spark job: score new raw data with a trained model.

    spark-submit jobs/score.py --config conf/digits_cnn.yaml --model runs/<run>/model.pt \\
        --input new.csv --output predictions/

Same as ``python -m pipeline score``; the master comes from spark-submit (local[*] if unset).
Writes ``<output>/predictions/`` (row_id, label, prediction_index, prediction,
probabilities), ``<output>/rejected/`` (raw rows + reason) and ``<output>/metrics.json``;
the last line of output is the output directory.
"""
import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
