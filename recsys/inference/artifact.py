"""A self-describing model artifact: ``model.safetensors`` + ``artifact.json``.

``artifact.json`` holds everything needed to rebuild and serve the model besides the
weights: the format version, the encoder config, the vocabulary (raw item ids in token
order), per-item popularity counts from the training data (the empty-history fallback),
the dataset fingerprint, the run's metrics and the library version. Loading reads JSON
and safetensors only; nothing is ever unpickled, so a hostile file can at worst fail to
load. Writing is atomic: files go into a temporary sibling folder that is renamed into
place only when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recsys.baselines.base import Baseline
from recsys.baselines.registry import BASELINES, restore_baseline
from recsys.config import ModelConfig
from recsys.data.vocab import Vocab
from recsys.errors import ArtifactError
from recsys.nn.encoder import ENCODERS, build_encoder
from recsys.nn.heads import ActionHeads, event_types, summary_size

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
MANIFEST = "artifact.json"
ONNX_FILE = "model.onnx"
HEADS_PREFIX = "heads."  # action-head tensors share the weights file under this prefix

# First bytes of formats that unpickle on load: a raw pickle (protocol 2+ opens with
# PROTO 0x80) and torch.save's zip container. Named only to refuse them clearly.
_PICKLE_MAGIC = b"\x80"
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class ActionSpec:
    """Action types (view, cart, buy...) of a model trained on a log with ``data.event_col``.

    ``names[i]`` is action id ``i + 1`` (0 = padding). ``reads`` says whether the encoder
    embeds the action of each history event (``model.use_actions``), in which case every
    request must carry the actions; ``purchase_horizon`` > 0 when a purchase head exists
    (probability that ``purchase_event`` happens within the next that many events).
    ``time_gaps`` / ``item_relations``: the encoder reads (action, gap bucket, item relation)
    tokens (``recsys.nn.heads.event_tokens``), so requests carry timestamps (time gaps);
    ``relation_ids`` the (cart, purchase) action ids relations read. ``candidate``: a
    next-action head given the next event's item and time; ``churn_days`` > 0: a churn head,
    P(no event in the next that many days). ``history_summary``: the heads also read
    ``recsys.nn.heads.history_summary`` of the history (needs timestamps).
    """

    names: tuple[str, ...]
    reads: bool
    purchase_event: str | None = None
    purchase_horizon: int = 0
    time_gaps: bool = False
    item_relations: bool = False
    relation_ids: tuple[int, int] = (0, 0)
    candidate: bool = False
    churn_days: float = 0.0
    history_summary: bool = False


@dataclass(frozen=True)
class Artifact:
    """Weights + everything that builds and describes them.

    ``state_dict`` holds the encoder's tensors (keys as in ``SASRecEncoder.state_dict()``,
    no ``encoder.`` prefix), or, for a counting baseline (``model.name`` in
    ``recsys.baselines.registry.BASELINES``), the arrays of its ``state()``; ``heads_state``
    the next-action heads' (``ActionHeads``), empty without. ``item_counts`` has ``n_items + 1`` entries indexed by token id (entry 0, PAD,
    is 0), or is ``None`` when the exporter had no training data.
    """

    model: ModelConfig
    vocab: Vocab
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    item_counts: np.ndarray | None = field(default=None, repr=False)
    dataset: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    recsys_version: str = ""
    onnx: dict[str, Any] | None = None  # how model.onnx was exported, when the folder holds one
    actions: ActionSpec | None = None
    heads_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def mask_token(self) -> int | None:
        """[MASK] id appended after the history for cloze models (BERT4Rec), else None."""
        spec = ENCODERS.get(self.model.name)
        return self.vocab.mask_id if spec is not None and spec.objective == "cloze" else None

    def _item_attributes(self) -> list[list[int]] | None:
        """Per-item attribute bags, read back from the encoder's own CSR buffers."""
        if "attr_ids" not in self.state_dict:
            return None
        ids = self.state_dict["attr_ids"].tolist()
        offsets = self.state_dict["attr_offsets"].tolist()  # over tokens 0..n+1
        return [ids[offsets[t] : offsets[t + 1]] for t in range(1, self.vocab.n_items + 1)]

    @property
    def is_baseline(self) -> bool:
        """True for a counting baseline (popularity, transitions...): no encoder, no embeddings."""
        return self.model.name in BASELINES

    def build_baseline(self) -> Baseline:
        """The fitted baseline these arrays describe (scores as on the training side)."""
        if not self.is_baseline:
            raise ArtifactError(f"model {self.model.name!r} is not a baseline ({sorted(BASELINES)})")
        try:
            return restore_baseline(self.model, {k: v.numpy() for k, v in self.state_dict.items()})
        except (KeyError, ValueError) as exc:
            raise ArtifactError(f"baseline arrays do not fit {self.model.name!r}: {exc}") from exc

    def check(self) -> None:
        """Build what the artifact describes (encoder and heads, or baseline); raise
        ``ArtifactError`` if the tensors do not fit the config."""
        if self.is_baseline:
            self.build_baseline()
        else:
            self.build_encoder()
            self.build_heads()

    def build_encoder(self) -> torch.nn.Module:
        """The encoder with these weights, in eval mode (dropout off)."""
        if self.model.name not in ENCODERS:
            raise ArtifactError(
                f"model {self.model.name!r} is neither a neural encoder ({sorted(ENCODERS)}) nor a baseline "
                f"({sorted(BASELINES)})" if not self.is_baseline else
                f"model {self.model.name!r} is a baseline: it has no encoder (use build_baseline)"
            )
        a = self.actions
        n_events = event_types(len(a.names), a.time_gaps, a.item_relations) if a is not None and a.reads else 0
        try:
            encoder = build_encoder(
                self.model, self.vocab.n_items, n_events=n_events, item_attributes=self._item_attributes()
            )
            encoder.load_state_dict(self.state_dict, strict=True)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ArtifactError(f"weights do not fit the model config {self.model}: {exc}") from exc
        return encoder.eval()

    def build_heads(self) -> ActionHeads | None:
        """The next-action (and purchase) heads, or None when the model has none."""
        if not self.heads_state:
            return None
        if self.actions is None:
            raise ArtifactError("the artifact has action-head weights but no action types")
        a = self.actions
        heads = ActionHeads(self.model.dim, len(a.names), purchase=a.purchase_horizon > 0, candidate=a.candidate,
                            churn=a.churn_days > 0, summary=summary_size(len(a.names)) if a.history_summary else 0)
        try:
            heads.load_state_dict(self.heads_state, strict=True)
        except RuntimeError as exc:
            raise ArtifactError(f"action-head weights do not fit {len(self.actions.names)} action types: {exc}") from exc
        return heads.eval()

    def manifest(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "recsys_version": self.recsys_version,
            "model": dataclasses.asdict(self.model),
            "weights": WEIGHTS,
            "vocab": {"pad_id": self.vocab.pad_id, "mask_id": self.vocab.mask_id, "items": list(self.vocab.items)},
            "actions": None if self.actions is None else dataclasses.asdict(self.actions),
            "item_counts": None if self.item_counts is None else self.item_counts.tolist(),
            "dataset": self.dataset,
            "metrics": self.metrics,
        }


def _library_version() -> str:
    from recsys import __version__  # the distribution (recsys-lab) takes its version from here

    return __version__


def write_artifact(
    artifact: Artifact,
    out: str | Path,
    overwrite: bool = False,
    extra: Callable[[Path], dict[str, Any]] | None = None,
) -> Path:
    """Write ``artifact`` to the folder ``out`` atomically; return ``out``.

    ``extra(folder)`` may write more files into the folder being built and returns entries
    for ``artifact.json`` (``recsys.inference.export.save_artifact`` adds the ONNX graph
    this way; this module never exports ONNX itself). An existing ``out`` is an error unless
    ``overwrite``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    if artifact.item_counts is not None and artifact.item_counts.shape != (artifact.vocab.n_items + 1,):
        raise ArtifactError(
            f"item_counts must have n_items + 1 = {artifact.vocab.n_items + 1} entries, "
            f"got shape {artifact.item_counts.shape}"
        )
    artifact.check()  # refuse to write weights that do not fit the config
    if not artifact.recsys_version:
        artifact = dataclasses.replace(artifact, recsys_version=_library_version())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in artifact.state_dict.items()}
        tensors.update({HEADS_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in artifact.heads_state.items()})
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "recsys", "format_version": str(FORMAT_VERSION)})
        manifest = artifact.manifest()
        if extra is not None:
            manifest.update(extra(tmp))
        (tmp / MANIFEST).write_text(_dump_manifest(manifest), encoding="utf-8")
        _default_permissions(tmp)
        if out.exists():  # overwrite: move the old one aside first, so out is never half-written
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "artifact")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _dump_manifest(manifest: dict[str, Any]) -> str:
    """One top-level key per line: the header stays readable with a million-item vocabulary."""
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in manifest.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _default_permissions(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder; give the artifact the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for child in folder.iterdir():
        child.chmod(0o666 & ~umask)


def _refuse_pickle(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors opens with its header's length (u64, little-endian) and then the JSON
    # header's "{": a length whose low byte is 0x80 (1 header size in 256) is not a pickle.
    if head[8:9] == b"{":
        return
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        raise ArtifactError(
            f"{path} is a pickle / torch.save file; recsys never unpickles artifacts (unpickling runs "
            "arbitrary code). Export a run directory with `recsys export RUN_DIR --out DIR`."
        )


def read_manifest(path: str | Path) -> dict[str, Any]:
    """``artifact.json`` of the artifact folder ``path``, checked for format and keys."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such artifact")
    if path.is_file():
        _refuse_pickle(path)
        raise ArtifactError(f"{path} is a file; an artifact is a folder holding {MANIFEST} and {WEIGHTS}")
    missing = [name for name in (MANIFEST, WEIGHTS) if not (path / name).is_file()]
    if missing:
        raise ArtifactError(f"{path} is not a recsys artifact: missing {', '.join(missing)}")
    _refuse_pickle(path / MANIFEST)
    try:
        doc = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path / MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path / MANIFEST} must hold a JSON object")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format_version {version!r} is not supported by this recsys "
            f"(reads version {FORMAT_VERSION})"
        )
    for key in ("model", "vocab"):
        if not isinstance(doc.get(key), dict):
            raise ArtifactError(f"{path / MANIFEST}: missing or malformed {key!r}")
    return doc


def load_artifact(path: str | Path) -> Artifact:
    """Read an artifact folder. Never unpickles; any malformed part raises ``ArtifactError``."""
    path = Path(path)
    doc = read_manifest(path)
    try:
        model = ModelConfig(**doc["model"])
        vocab = Vocab(tuple(doc["vocab"]["items"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path / MANIFEST}: malformed model config or vocabulary: {exc}") from exc
    if doc["vocab"].get("pad_id") != vocab.pad_id or doc["vocab"].get("mask_id") != vocab.mask_id:
        raise ArtifactError(f"{path}: vocabulary special ids do not match this version of recsys")
    if not all(isinstance(x, str) for x in vocab.items):
        raise ArtifactError(f"{path}: vocabulary items must be strings")
    counts = doc.get("item_counts")
    if counts is not None:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != (vocab.n_items + 1,) or (counts < 0).any():
            raise ArtifactError(f"{path}: item_counts must be n_items + 1 non-negative integers")
    weights = path / WEIGHTS
    _refuse_pickle(weights)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights} is not a valid safetensors file: {exc}") from exc
    heads = {k[len(HEADS_PREFIX) :]: state.pop(k) for k in [k for k in state if k.startswith(HEADS_PREFIX)]}
    actions = None
    if doc.get("actions") is not None:
        try:
            spec = dict(doc["actions"])
            actions = ActionSpec(**{**spec, "names": tuple(spec["names"]),
                                    "relation_ids": tuple(spec.get("relation_ids", (0, 0)))})
        except (TypeError, KeyError) as exc:
            raise ArtifactError(f"{path / MANIFEST}: malformed 'actions': {exc}") from exc
    artifact = Artifact(
        model=model,
        vocab=vocab,
        state_dict=state,
        item_counts=counts,
        dataset=doc.get("dataset") or {},
        metrics=doc.get("metrics") or {},
        recsys_version=doc.get("recsys_version", ""),
        onnx=doc.get("onnx"),
        actions=actions,
        heads_state=heads,
    )
    artifact.check()  # shapes and keys must fit the config
    return artifact


def random_artifact(
    n_items: int, model: ModelConfig | None = None, seed: int = 0, with_counts: bool = True
) -> Artifact:
    """An artifact with freshly initialised weights and ids ``"i0".."i{n-1}"``.

    For benchmarks and tests: serving cost does not depend on what the weights learnt.
    Counts, if asked for, are Zipf-like so the popularity order is not trivial.
    """
    model = model or ModelConfig()
    torch.manual_seed(seed)
    encoder = build_encoder(model, n_items)
    vocab = Vocab(tuple(f"i{i}" for i in range(n_items)))
    counts = None
    if with_counts:
        rng = np.random.default_rng(seed)
        counts = np.concatenate([[0], rng.zipf(1.5, n_items).clip(max=1_000_000)]).astype(np.int64)
    return Artifact(
        model=model,
        vocab=vocab,
        state_dict={k: v.detach().clone() for k, v in encoder.state_dict().items()},
        item_counts=counts,
        dataset={"name": "random", "fingerprint": None},
    )
