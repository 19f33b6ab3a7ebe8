"""Run directory -> artifact, and artifact (+ ONNX graph) -> folder.

``export_run`` reads a finished run (its config, vocabulary, metrics and best checkpoint,
as ``recsys.rundir`` names them); the Lightning checkpoint is opened with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers. Item popularity counts come from the caller (``recsys export`` computes
them from the run's training split), because reading event logs needs pandas, which
this package must not import.

``save_artifact`` writes an artifact and, with ``onnx_k``, its ONNX graph
(``recsys.inference.onnx_export``) into the same atomically renamed folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys import rundir
from recsys.baselines.base import Baseline
from recsys.data.vocab import Vocab
from recsys.errors import ArtifactError
from recsys.inference.artifact import ONNX_FILE, ActionSpec, Artifact, write_artifact
from recsys.inference.onnx_export import export_onnx
from recsys.nn.heads import relation_action_ids


def read_run(run_dir: str | Path, item_counts: np.ndarray | None = None) -> Artifact:
    """The ``Artifact`` of a finished run directory (weights of its best checkpoint)."""
    run_dir = Path(run_dir)
    rundir.require(run_dir, [rundir.CONFIG, rundir.VOCAB, rundir.METRICS, rundir.BEST_CHECKPOINT])
    cfg = rundir.read_config(run_dir)
    vocab = Vocab.load(run_dir / rundir.VOCAB)
    recorded = rundir.read_metrics(run_dir)
    checkpoint = run_dir / rundir.BEST_CHECKPOINT
    try:
        # weights_only: a checkpoint is data; unpickling arbitrary objects could run code.
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, zip errors...: all mean "not a safe checkpoint"
        raise ArtifactError(f"{checkpoint} cannot be loaded safely (weights_only=True): {exc}") from exc
    weights = ckpt.get("state_dict", {})
    state = {k[len("encoder.") :]: v for k, v in weights.items() if k.startswith("encoder.")}
    heads = {k[len("heads.") :]: v for k, v in weights.items() if k.startswith("heads.")}
    if not state:
        raise ArtifactError(f"{checkpoint} holds no encoder weights")
    actions = None
    names = rundir.read_event_names(run_dir)
    if names is not None:
        purchase = cfg.train.purchase_horizon > 0 and "purchase.weight" in heads
        reads = bool(cfg.model.use_actions)
        actions = ActionSpec(
            names=names,
            reads=reads,
            purchase_event=cfg.train.purchase_event if purchase else None,
            purchase_horizon=cfg.train.purchase_horizon if purchase else 0,
            time_gaps=reads and cfg.model.time_gaps,
            item_relations=reads and cfg.model.item_relations,
            relation_ids=relation_action_ids(names, cfg.train.purchase_event),
            candidate="candidate.out.weight" in heads,
            churn_days=cfg.train.churn_days if "churn.out.weight" in heads else 0.0,
            history_summary=bool(cfg.model.history_summary),
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


def baseline_artifact(run_dir: str | Path, baseline: Baseline, item_counts: np.ndarray | None = None) -> Artifact:
    """The ``Artifact`` of a finished baseline run, holding the fitted ``baseline``'s arrays.

    Baselines have no checkpoint (``recsys evaluate`` refits them): the caller refits on the
    run's training split (``recsys export`` does) and passes the fitted model here."""
    run_dir = Path(run_dir)
    rundir.require(run_dir, [rundir.CONFIG, rundir.VOCAB, rundir.METRICS])
    cfg = rundir.read_config(run_dir)
    recorded = rundir.read_metrics(run_dir)
    return Artifact(
        model=cfg.model,
        vocab=Vocab.load(run_dir / rundir.VOCAB),
        state_dict={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in baseline.state().items()},
        item_counts=item_counts,
        dataset=dict(recorded.get("dataset", {}), split=cfg.data.split),
        metrics={key: recorded[key] for key in ("valid", "test", "protocol", "exclude_seen") if key in recorded},
    )


def save_artifact(artifact: Artifact, out: str | Path, overwrite: bool = False, onnx_k: int | None = None) -> Path:
    """Write ``artifact`` to the folder ``out`` atomically; return ``out``.

    ``onnx_k``: also export ``model.onnx`` returning the top ``onnx_k`` items (needs the
    ``onnx`` extra), described under ``"onnx"`` in ``artifact.json``. An existing ``out``
    is an error unless ``overwrite``.
    """
    def onnx(folder: Path) -> dict[str, Any]:
        return {"onnx": export_onnx(artifact, folder / ONNX_FILE, k=onnx_k)}

    return write_artifact(artifact, out, overwrite=overwrite, extra=None if onnx_k is None else onnx)


def export_run(
    run_dir: str | Path,
    out: str | Path,
    item_counts: np.ndarray | None = None,
    overwrite: bool = False,
    onnx_k: int | None = None,
    baseline: Baseline | None = None,
) -> Path:
    """Write the artifact of ``run_dir`` to ``out`` atomically (plus ``model.onnx`` if ``onnx_k``).

    A baseline run passes its refitted ``baseline`` (it has no checkpoint to read)."""
    artifact = read_run(run_dir, item_counts) if baseline is None else baseline_artifact(run_dir, baseline, item_counts)
    return save_artifact(artifact, out, overwrite=overwrite, onnx_k=onnx_k)
