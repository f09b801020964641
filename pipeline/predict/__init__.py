"""Predict and export without Spark: the model bundle's featurizer as plain numbers.

``predict`` writes score's predictions for new raw input with pyarrow, Pillow and torch;
``export`` writes a TorchScript or ONNX model with the featurizer's constants inside.
"""
from pipeline.predict.bundle import PredictError
from pipeline.predict.job import PredictResult, predict

__all__ = ["PredictError", "PredictResult", "predict"]
