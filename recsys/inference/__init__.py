"""Serving: artifacts (safetensors + JSON), ``Recommender``, ONNX export.

Imports torch, numpy and safetensors only: never Lightning, Optuna or pandas (ranking
services import this; ``tests/inference/test_import_weight.py`` proves it). The HTTP
service lives in ``recsys.inference.http`` and is not imported here.
"""

from recsys.inference.artifact import ActionSpec, Artifact, load_artifact, random_artifact
from recsys.inference.export import export_run, save_artifact
from recsys.inference.inputs import EMPTY_POLICIES, UNKNOWN_POLICIES, EmptyHistoryError, UnknownItemError
from recsys.inference.onnx_export import export_onnx
from recsys.inference.onnx_runtime import OnnxRecommender
from recsys.inference.recommender import NextAction, Recommendations, Recommender, load

__all__ = [
    "ActionSpec",
    "Artifact",
    "EMPTY_POLICIES",
    "EmptyHistoryError",
    "NextAction",
    "OnnxRecommender",
    "Recommendations",
    "Recommender",
    "UNKNOWN_POLICIES",
    "UnknownItemError",
    "export_onnx",
    "export_run",
    "load",
    "load_artifact",
    "random_artifact",
    "save_artifact",
]
