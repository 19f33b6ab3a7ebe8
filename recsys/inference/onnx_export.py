"""Artifact -> ONNX graph.

``export_onnx`` writes a graph that maps left-padded token ids straight to the top-k
token ids and scores; ``OnnxRecommender`` maps those ids back to raw ids through the
artifact's vocabulary, so callers stay in raw-id space. Writing an artifact together with
its graph is ``recsys.inference.export.save_artifact``'s job: the artifact module itself
knows nothing of ONNX.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recsys.inference.artifact import Artifact

ONNX_OPSET = 18
ONNX_INPUTS = ("inputs", "exclude")
ONNX_OUTPUTS = ("token_ids", "scores")


class TopKGraph(nn.Module):
    """The exported computation: histories -> top-k (token ids, scores).

    ``exclude`` (B, E) lists token ids to leave out per row (the history itself for
    ``exclude_seen``, or one PAD column for none): they score ``-inf``. PAD's own column
    is ``-inf`` already, so padding ``exclude`` with PAD is harmless. Rows whose catalogue
    runs out return ``-inf`` scores at the end, which callers drop.
    """

    def __init__(self, encoder: nn.Module, k: int) -> None:
        super().__init__()
        self.encoder, self.k = encoder, k

    def forward(self, inputs: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.encoder.score(self.encoder.last_state(inputs), inputs)  # (B, V + 1)
        scores = scores.scatter(1, exclude, float("-inf"))
        top = torch.topk(scores, self.k)  # column index == token id, thanks to the PAD column
        return top.indices, top.values  # (B, k), (B, k)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter warns about optional torchvision ops and its own deprecations; a
    command-line export should print the result, not that."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(artifact: Artifact, path: str | Path, k: int = 10) -> dict[str, Any]:
    """Write ``TopKGraph`` as ONNX with dynamic batch, sequence and exclude lengths.

    Inputs: ``inputs`` (B, L) int64 left-padded token ids with 1 <= L <= max_len, and
    ``exclude`` (B, E) int64. Outputs: ``token_ids`` (B, k) int64, ``scores`` (B, k)
    float32. Returns the description stored under ``"onnx"`` in ``artifact.json``.
    Needs the ``onnx`` extra (onnx, onnxscript).
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= artifact.vocab.n_items:
        raise ValueError(f"onnx k must be an int in 1..n_items={artifact.vocab.n_items}, got {k!r}")
    if artifact.actions is not None and artifact.actions.reads:
        raise ValueError("ONNX export covers item-only inputs; this model also reads action types (serve it "
                         "with Recommender, or train with model.use_actions=false)")
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; fail with a clear message)
    except ImportError as exc:
        raise ImportError("ONNX export needs the onnx extra: pip install 'recsys[onnx]'") from exc
    max_len = artifact.model.max_len
    graph = TopKGraph(artifact.build_encoder(), k).eval()
    example = (torch.ones(2, min(3, max_len), dtype=torch.int64), torch.zeros(2, 2, dtype=torch.int64))
    batch = torch.export.Dim("batch", min=1)
    dynamic = {
        "inputs": {0: batch, 1: torch.export.Dim("seq", min=1, max=max_len)},
        "exclude": {0: batch, 1: torch.export.Dim("exclude", min=1)},
    }
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=list(ONNX_INPUTS),
            output_names=list(ONNX_OUTPUTS),
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    program.save(str(path))
    return {"file": Path(path).name, "k": k, "opset": ONNX_OPSET, "inputs": list(ONNX_INPUTS),
            "outputs": list(ONNX_OUTPUTS), "torch": torch.__version__}
