"""Run directory -> artifact, and artifact -> ONNX graph.

``export_run`` reads a finished run (``config.yaml``, ``vocab.json``, ``metrics.json``,
``checkpoints/best.ckpt``); the Lightning checkpoint is opened with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers. Item popularity counts come from the caller (``recsys export`` computes
them from the run's training split), because reading event logs needs pandas, which
this package must not import.

``export_onnx`` writes a graph that maps left-padded token ids straight to the top-k
token ids and scores; ``OnnxRecommender`` maps those ids back to raw ids through the
artifact's vocabulary, so callers stay in raw-id space.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recsys.config import ExperimentConfig
from recsys.data.vocab import Vocab
from recsys.errors import ArtifactError
from recsys.inference.artifact import ActionSpec, Artifact, save_artifact

CHECKPOINT = Path("checkpoints") / "best.ckpt"
EVENT_VOCAB = "events.json"  # action types of a run on a log with data.event_col
ONNX_OPSET = 18
ONNX_INPUTS = ("inputs", "exclude")
ONNX_OUTPUTS = ("token_ids", "scores")


def read_run(run_dir: str | Path, item_counts: np.ndarray | None = None) -> Artifact:
    """The ``Artifact`` of a finished run directory (weights of its best checkpoint)."""
    run_dir = Path(run_dir)
    needed = ["config.yaml", "vocab.json", "metrics.json", str(CHECKPOINT)]
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing:
        raise ArtifactError(f"{run_dir} is not a complete run directory: missing {', '.join(missing)}")
    cfg = ExperimentConfig.from_yaml(run_dir / "config.yaml")
    vocab = Vocab.load(run_dir / "vocab.json")
    recorded = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    try:
        # weights_only: a checkpoint is data; unpickling arbitrary objects could run code.
        ckpt = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, zip errors...: all mean "not a safe checkpoint"
        raise ArtifactError(f"{run_dir / CHECKPOINT} cannot be loaded safely (weights_only=True): {exc}") from exc
    weights = ckpt.get("state_dict", {})
    state = {k[len("encoder.") :]: v for k, v in weights.items() if k.startswith("encoder.")}
    heads = {k[len("heads.") :]: v for k, v in weights.items() if k.startswith("heads.")}
    if not state:
        raise ArtifactError(f"{run_dir / CHECKPOINT} holds no encoder weights (baselines are not exported)")
    actions = None
    if (run_dir / EVENT_VOCAB).is_file():
        names = tuple(json.loads((run_dir / EVENT_VOCAB).read_text(encoding="utf-8"))["names"])
        purchase = cfg.train.purchase_horizon > 0 and "purchase.weight" in heads
        actions = ActionSpec(
            names=names,
            reads=bool(cfg.model.use_actions),
            purchase_event=cfg.train.purchase_event if purchase else None,
            purchase_horizon=cfg.train.purchase_horizon if purchase else 0,
        )
    return Artifact(
        model=cfg.model,
        vocab=vocab,
        state_dict=state,
        item_counts=item_counts,
        dataset=dict(recorded.get("dataset", {}), split=cfg.data.split),
        metrics={key: recorded[key] for key in ("valid", "test", "protocol", "exclude_seen") if key in recorded},
        actions=actions,
        heads_state=heads,
    )


def export_run(
    run_dir: str | Path,
    out: str | Path,
    item_counts: np.ndarray | None = None,
    overwrite: bool = False,
    onnx_k: int | None = None,
) -> Path:
    """Write the artifact of ``run_dir`` to ``out`` atomically (plus ``model.onnx`` if ``onnx_k``)."""
    return save_artifact(read_run(run_dir, item_counts), out, overwrite=overwrite, onnx_k=onnx_k)


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
