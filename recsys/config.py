"""Experiment configuration: frozen dataclasses, one per concern, with YAML round-trip.

Defaults live here and only here. ``ExperimentConfig.from_yaml(path)`` reads a file,
``cfg.with_overrides(["train.lr=3e-3"])`` applies command-line overrides, and
``cfg.to_yaml()`` writes the fully resolved config that a run directory keeps.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys.errors import ConfigError

DATA_FORMATS = ("s3rec", "user_item", "movielens", "csv", "parquet", "jsonl")
SPLITS = ("loo", "temporal")


@dataclass(frozen=True)
class EncoderSpec:
    """A neural ``model.name``: how attention is masked, how the encoder is trained, and which
    block its layers are (``recsys.nn.blocks.BLOCKS``).

    ``causal``: a position sees only itself and earlier positions. ``objective``: ``next``
    (targets are the next item at every position) or ``cloze`` (random positions are replaced
    by [MASK] and predicted; at inference a [MASK] is appended after the history and its
    output is the user state). Everything that depends on the model (the transition head's
    default, action tokens, validation) asks the spec, not the name, so a new causal block
    gets the fast path, the head, export and serving as SASRec does.
    """

    causal: bool
    objective: str
    block: str = "sasrec"


# The one table of neural models (recsys.nn.encoder builds them, recsys.training and
# recsys.inference read it): every causal one is SASRec's encoder (embeddings, causal mask,
# next-item targets) with another block; bert4rec is the same encoder bidirectional.
ENCODERS: dict[str, EncoderSpec] = {
    "sasrec": EncoderSpec(causal=True, objective="next"),
    "bert4rec": EncoderSpec(causal=False, objective="cloze"),
    "bsarec": EncoderSpec(causal=True, objective="next", block="bsarec"),
    "hstu": EncoderSpec(causal=True, objective="next", block="hstu"),
    "ligr": EncoderSpec(causal=True, objective="next", block="ligr"),
}
# Names the registries in recsys.nn / recsys.baselines / recsys.training implement (a test
# keeps them equal); listed here so a typo fails when the config loads, not mid-run.
ENCODER_NAMES = tuple(ENCODERS)
BASELINE_NAMES = ("popularity", "recent_popularity", "transitions")
LOSS_NAMES = ("ce", "ce_chunked", "sampled", "bce", "gbce")
SAMPLER_NAMES = ("uniform", "popularity", "in_batch")
NEGATIVES_PER = ("batch", "position")
DROPOUT_SAMPLERS = ("bernoulli", "uniform")
PRECISIONS = ("fp32", "bf16")
# Validation metrics of the next-action head that eval.monitor may name instead of a ranking
# metric (logs with data.event_col), with the direction that is better.
# ``behaviour_nll`` (temporal splits): the heads' summed log-loss on every moment of the
# validation window (recsys.training.behaviour.BehaviourMonitor), not only each user's first.
ACTION_MONITORS = {"action_nll": "min", "action_accuracy": "max", "action_macro_f1": "max", "behaviour_nll": "min"}
# Lightning accelerators train.accelerator may name ("auto": a GPU when there is one).
ACCELERATORS = ("cpu", "gpu", "auto")
# Experiment trackers train.logger may name (recsys.training.loggers): each writes beside the
# CSV log every run keeps; all but csv need their optional extra.
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")


# Fields added (or whose default changed) after results existed, with the value that
# reproduces the older behaviour. A stored config (a run directory's config.yaml, always
# written whole) that lacks one was written before it existed, so it is read back with this
# value, not today's default (``ExperimentConfig.from_stored``); and at this value a field is
# left out of the result hash (``recsys.report.results.config_hash``), so adding a field does
# not make finished runs stale. Adding a field, or changing a default, means adding it here:
# tests/test_config.py checks every field against a config stored by an early version.
LEGACY_VALUES: dict[tuple[str, str], Any] = {
    ("train", "negatives_per"): "batch",
    ("train", "prior_offset"): False,
    ("model", "tied_output"): True,
    ("model", "dropout_sampler"): "bernoulli",
    ("train", "length_groups"): 1,
    ("train", "length_bucket"): 1,
    ("train", "encoder_precision"): "fp32",
    ("model", "transition_lags"): 0,
    ("model", "transition_width"): 32,
    ("model", "transition_ce_weight"): 1.0,
    ("model", "transition_em"): 0,
    ("train", "chunk_size"): 1024,
    ("model", "bsarec_alpha"): 0.9,
    ("model", "bsarec_c"): 3,
    ("model", "ligr_ffn_mult"): 4,
    ("model", "time_gaps"): False,
    ("model", "item_relations"): False,
    ("model", "history_summary"): False,
    ("model", "action_candidate"): False,
    ("model", "head_dropout"): 0.0,
    ("train", "head_weight_decay"): None,
    ("train", "churn_days"): 0.0,
    ("train", "churn_loss_weight"): 0.5,
    ("train", "calibrate"): False,
    ("train", "item_loss_weight"): 1.0,
}


@dataclass(frozen=True)
class DataConfig:
    """Where the event log lives and how to read and clean it.

    ``path`` is absolute or relative to ``data_dir`` (default: ``$RECSYS_DATA_DIR``).
    ``format`` is one of ``DATA_FORMATS``:

    - ``s3rec``: ``user item item ...`` per line, oldest first (S3-Rec / ICLRec files);
    - ``user_item``: ``user item`` per line in time order (SASRec / BERT4Rec files);
    - ``movielens``: ``user::item::rating::timestamp`` (MovieLens ``ratings.dat``);
    - ``csv`` / ``parquet``: any event log with the named columns. A CSV whose first line
      is data, not a header, lists its column names in ``names``;
    - ``jsonl``: one JSON object per line with the named fields (Amazon review dumps).

    ``split`` is one of ``SPLITS`` (see ``recsys.data.splits``):

    - ``loo`` (leave-one-out): each user's last event is the test target, the one before
      it the validation target;
    - ``temporal`` (global temporal split): the test cut is the ``split_quantile``
      quantile of all event timestamps, the validation cut the ``split_valid_quantile``
      quantile. Test targets are each user's first event after the test cut (input: the
      whole history up to the cut); validation targets the first event after the
      validation cut, if it is not after the test cut; training uses only events up to
      the validation cut. Formats without timestamps (``s3rec``, ``user_item``) carry
      positions as timestamps, so there the cut is on event position, not on time.

    ``event_col`` (csv / parquet / jsonl) names an action-type column (view, cart, ...):
    sequences then carry an action id per event (see ``recsys.data.sequences.EventVocab``).
    ``item_attributes`` is an optional S3-Rec ``*_item2attributes.json(.gz)`` file
    (``{"item": [attr, ...]}``), resolved like ``path``; ``null`` turns attributes off.
    """

    name: str = "s3rec-beauty"
    format: str = "s3rec"
    path: str = "s3rec-preprocessed/Beauty.txt.gz"
    data_dir: str | None = None
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = "timestamp"
    event_col: str | None = None
    sep: str = ","
    names: tuple[str, ...] = ()
    kcore: int = 0
    dedup: bool = False
    min_user_events: int = 3
    split: str = "loo"
    split_quantile: float = 0.9
    split_valid_quantile: float = 0.8
    item_attributes: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Model choice and shape. Field names match the encoder constructor's arguments.

    ``name``: an encoder (``ENCODERS``: ``sasrec`` causal, ``bert4rec`` bidirectional
    with cloze training; ``bsarec``, ``hstu``, ``ligr``: SASRec's causal encoder with another
    block, ``recsys.nn.blocks``) or a baseline (``BASELINE_NAMES``, no gradient training).
    ``use_positions: false`` drops the positional embedding (the SASRec ablation).
    ``use_actions``: embed the action type of each position when ``data.event_col`` is
    set (off: actions are still predicted by the next-action head, just not read).
    ``time_gaps`` (real timestamps): each event's action embedding becomes one of
    (action, bucketed log time since the user's previous event) (``recsys.nn.heads.gap_bucket``),
    so the encoder reads session structure. ``item_relations``: each event's action embedding
    also says how its item relates to the user's earlier events in the window (new, seen,
    carted and not bought since: ``recsys.nn.heads.item_relations``), so a buy that closes a
    cart reads differently from one that does not. ``action_candidate``: a second next-action head
    that also reads the candidate next event (its item, the user's earlier actions on that
    item, the bucketed gap before it: ``recsys.nn.heads.CandidateActionHead``).
    ``head_dropout``: the action, purchase and churn heads' own dropout on the encoder state.
    ``history_summary`` (with ``time_gaps``): the heads also read the user's state after each
    position (last action, which of the latest carts are still open, session length and age:
    ``recsys.nn.heads.history_summary``) beside the encoder's, and the action and purchase
    heads get one hidden layer (``recsys.nn.heads.SummaryMLP``) to combine them.
    ``recent_days``: window of the ``recent_popularity`` baseline, in days before the
    last training event (needs real timestamps). ``tied_output``: score items with the
    input item table (SASRec, BERT4Rec); off, a separate output table (the default of
    gSASRec's reference code), so the losses' push on output rows leaves the inputs alone.
    ``dropout_sampler`` (``DROPOUT_SAMPLERS``): where dropout's draws come from, ``bernoulli``
    (torch's dropout) or ``uniform`` (keep for ``(1 - p) 2^16`` of the 2^16 values of a
    uniform 16-bit integer: the same distribution to 2^-16, several times faster on CPU;
    other draws, so another trajectory for the same seed; see ``recsys.nn.layers.keep_mask``).
    ``transition_lags`` > 0 (causal encoders, softmax losses): predict with a mixture of the
    catalogue softmax and the item-to-item transitions of the last that many items, with
    learned, context-dependent weights and discounts and ``transition_width`` targets per
    source item and lag, picked from the training pairs (``recsys.nn.heads.TransitionHead``):
    a full-rank, sparse component beside the low-rank dot product (the softmax bottleneck).
    ``transition_ce_weight``: weight of the softmax component's own cross-entropy beside the
    mixture's (``recsys.nn.losses.Mixture``); 0 trains the softmax only on what the
    transitions miss, which measured worse on S3-Rec Beauty (validation NDCG@10 0.066, the
    softmax alone 0.039, against 0.070 without the head).
    ``transition_em``: EM iterations that weigh each training pair by how much its own lag,
    rather than a nearer lag or the items' overall frequency, explains it
    (``TransitionHead.fit_pattern``); 0 counts raw pairs. Raw lag-2 counts echo the lag-1
    chains (a -> b -> c puts c two steps after a) and every lag's counts carry the popular
    items: on the planted 6k x 3k log, 5 iterations took the default model's test NDCG@10 from
    0.896 to 0.944 of the oracle; on S3-Rec Beauty, where "bought together" is transitive,
    they cost validation NDCG@10. Unset (``null``, the default), the count is chosen from
    ``recsys.nn.heads.EM_CHOICES`` by the likelihood of each user's newest training event
    under tables counted from the rest; the run's log and ``metrics.json`` say which.

    Unset (``null``), ``transition_lags`` resolves when the experiment config is built
    (``default_transition_lags``): ``3`` for the causal encoder with a softmax loss (``ce``,
    ``ce_chunked``, ``sampled``), ``0`` otherwise (BERT4Rec's cloze targets, (g)BCE scores
    and baselines have no use for it); the run's resolved config records the number.

    Defaults (since 0.2, issue 18): ``dropout_sampler: uniform`` and the transition head;
    frozen configs written before pin ``bernoulli`` and ``0`` (README, "Defaults").

    Block options are named ``<block>_<option>`` and reach that block's constructor as
    ``option`` (``recsys.nn.blocks.options_from_config``); the other blocks never read them.
    ``bsarec_alpha``: BSARec's weight of the frequency rescaler beside self-attention
    (``alpha DSP(X) + (1 - alpha) Attn(X)``), in [0, 1]. ``bsarec_c``: its cut-off as the
    reference code spells it: the lowest ``c // 2 + 1`` frequencies of the rFFT over a
    ``max_len`` window are the low band (``recsys.nn.blocks.bsarec``). Defaults: the reference
    code's (``yehjin-shin/BSARec``, ``src/utils.py``: alpha 0.9, c 3); its Beauty run took 0.7, 5.
    ``ligr_ffn_mult``: the hidden width of LiGR's SwiGLU feed-forward in multiples of ``dim``
    (``recsys.nn.blocks.ligr``); default 4, RecTools' and eSASRec's for S3-Rec Beauty and
    ML-1M (``blondered/transformer_benchmark``, ``configs/paper/loo``: Toys 1, Sports 2).
    """

    name: str = "sasrec"
    dim: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    max_len: int = 50
    dropout: float = 0.2
    use_positions: bool = True
    use_actions: bool = True
    time_gaps: bool = False
    item_relations: bool = False
    history_summary: bool = False
    action_candidate: bool = False
    head_dropout: float = 0.0
    recent_days: float = 7.0
    tied_output: bool = True
    dropout_sampler: str = "uniform"
    transition_lags: int | None = None
    transition_width: int = 32
    transition_ce_weight: float = 1.0
    transition_em: int | None = None
    bsarec_alpha: float = 0.9
    bsarec_c: int = 3
    ligr_ffn_mult: int = 4


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and the training loop.

    ``loss`` is one of ``LOSS_NAMES`` (see ``recsys.nn.losses``): ``ce`` full softmax,
    ``ce_chunked`` the same computed ``chunk_size`` rows at a time, ``sampled`` sampled
    softmax over ``n_negatives`` negatives from ``sampler`` (with logQ correction if
    ``logq_correction``), ``bce`` one uniform negative per position (original SASRec),
    ``gbce`` gSASRec's generalised BCE with calibration ``gbce_t`` and ``n_negatives``
    uniform negatives (Petrov & Macdonald, RecSys 2023). ``negatives_per``: ``batch`` draws
    the ``n_negatives`` of ``sampled`` / ``gbce`` once per batch, shared by every position
    (one (N, D) x (D, K) product); ``position`` draws them afresh for every position, as
    gSASRec's reference code does (N x K gathered rows: more memory). ``prior_offset``
    (``bce``, ``gbce``): add the loss's optimal constant score ``log(beta / K)`` to every
    score (``recsys.nn.losses.prior_logit_offset``; ranking-invariant). ``mask_prob``: cloze masking
    rate of ``bert4rec``. With ``data.event_col`` set, ``action_loss_weight`` weights the
    next-action loss and ``purchase_horizon`` > 0 adds a head that predicts a
    ``purchase_event`` within the next k events, weighted by ``purchase_loss_weight``.
    ``head_weight_decay``: the heads' own weight decay (the encoder keeps ``weight_decay``;
    unset, the heads take ``weight_decay`` too).
    ``churn_days`` > 0 adds a churn head, P(no event in the next ``churn_days`` days) from the
    history and the time elapsed since its last event, trained on snapshots of the training
    period (``recsys.data.collate``) and weighted by ``churn_loss_weight``. ``calibrate``:
    after training, each head's logits are divided by a temperature fitted on the
    validation window's moments (``recsys.data.behaviour``); the temperatures are saved
    with the weights. ``item_loss_weight`` weights the next-item loss; 0 trains a behaviour
    model only (no catalogue softmax is computed: on a log of rare items, such as the Taobao
    sample, its memorisation otherwise drives the heads' early stopping).
    ``logit_precision``: ``bf16`` runs the (positions x catalogue) products of the ``ce``
    and ``ce_chunked`` losses on bf16 inputs (fp32 accumulation, bf16-rounded products);
    ``ce`` then takes an fp32 softmax, ``ce_chunked`` torch's fused one, computed in fp32
    and rounded to bf16 (see ``recsys.nn.kernels.softmax_ce.ChunkedSoftmaxCE``); ``fp32`` is exact.
    ``encoder_precision``: ``bf16`` runs the encoder's training forward (and so its
    backward) under bf16 autocast (see
    ``SeqRecModule._training_autocast``); validation, test and serving stay fp32.
    ``length_groups`` > 1 runs each training batch through the encoder in that many groups
    of rows of similar length, each trimmed to its longest row: the same model and loss
    with less compute spent on padding (see
    ``recsys.nn.encoder.SASRecEncoder.grouped_forward``); 1 runs the padded batch whole.
    ``length_bucket`` rounds each group's width up to a multiple of that many columns: the
    same outputs, and few enough product shapes that oneDNN's kernel caches keep them all
    (``recsys.nn.kernels.grouped``); unread with ``length_groups: 1``.

    ``accelerator`` (``ACCELERATORS``), ``devices`` (processes per node, one per device) and
    ``num_nodes`` go to the Lightning Trainer; more than one process in all trains with DDP
    (gloo on CPU, NCCL on GPU). ``batch_size`` stays the global batch: each process takes a
    slice of it, so the gradient is the one-process gradient (README, "Multi-process ...").
    ``num_threads`` is per process. ``retain_memory`` keeps memory that training frees in
    the process (glibc's malloc; see ``recsys.training.allocator``), so steps reuse pages
    rather than fault fresh ones in; like ``num_threads``, it changes speed, not results.
    ``trim_memory`` caps oneDNN's kernel caches and gives the free pages malloc kept back
    to the system when training hands over to validation and at each epoch's end, so RSS
    stays flat over a long run (``recsys.training.allocator.TrimFreedMemory``); speed, not
    results, as well.

    ``logger`` (``LOGGERS``): where the training curves go besides the run's CSV log
    (``logs/metrics.csv``, always written): ``tensorboard`` (``logs/tensorboard``), ``mlflow``
    (``$MLFLOW_TRACKING_URI``, else a SQLite store in ``logs/mlflow.db``) or ``wandb``
    (wandb's own settings); each needs its extra (``recsys.training.loggers``). Like
    ``progress_bar``, it changes what is shown, not results.

    Defaults (since 0.2, issue 18): the fast path, ``loss: ce_chunked``, ``length_groups: 4``,
    ``logit_precision: bf16`` and ``encoder_precision: bf16`` (bf16 kept the planted log's
    validation curve within 0.001 of fp32's; with all defaults, S3-Rec Beauty's 3 seeds score
    0.0572 test NDCG@10 against the plain path's 0.0570; README, "Defaults"); frozen configs
    written before pin ``ce``, ``1``, ``fp32``, ``fp32``.
    """

    loss: str = "ce_chunked"
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 200
    patience: int = 10
    grad_clip: float = 0.0
    num_threads: int = 0
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    deterministic: bool = True
    progress_bar: bool = True
    n_negatives: int = 256
    sampler: str = "uniform"
    logq_correction: bool = True
    gbce_t: float = 0.75
    chunk_size: int = 512
    logit_precision: str = "bf16"
    negatives_per: str = "batch"
    prior_offset: bool = False
    mask_prob: float = 0.2
    action_loss_weight: float = 0.5
    purchase_horizon: int = 0
    purchase_event: str = "buy"
    purchase_loss_weight: float = 0.5
    head_weight_decay: float | None = None
    churn_days: float = 0.0
    churn_loss_weight: float = 0.5
    calibrate: bool = False
    item_loss_weight: float = 1.0
    length_groups: int = 4
    length_bucket: int = 16
    encoder_precision: str = "bf16"
    retain_memory: bool = True
    trim_memory: bool = True
    logger: str = "csv"


@dataclass(frozen=True)
class EvalConfig:
    """Full-catalogue ranking evaluation."""

    ks: tuple[int, ...] = (1, 5, 10, 20)
    exclude_seen: bool = False
    batch_size: int = 256  # users per scoring block; 256 was faster than 1024 on a 2-core CPU (SPEED.md)
    monitor: str = "ndcg@10"  # or a next-action metric (ACTION_MONITORS), for logs with actions


# Losses whose scores are log-probabilities up to a constant: the transition head mixes in
# probability, so it needs one of these.
SOFTMAX_LOSSES = ("ce", "ce_chunked", "sampled")
DEFAULT_TRANSITION_LAGS = 3


def default_transition_lags(model_name: str, loss: str) -> int:
    """``model.transition_lags`` when the config leaves it unset: the head for a causal
    encoder trained with a softmax loss, none otherwise."""
    return DEFAULT_TRANSITION_LAGS if is_causal(model_name) and loss in SOFTMAX_LOSSES else 0


def is_causal(model_name: str) -> bool:
    """A causal neural encoder (``ENCODERS``); False for bidirectional ones and baselines."""
    spec = ENCODERS.get(model_name)
    return spec is not None and spec.causal


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: data + model + training + evaluation + seed."""

    name: str = "sasrec-ce"
    seed: int = 42
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.model.transition_lags is None:  # resolved here, so every run records a number
            lags = default_transition_lags(self.model.name, self.train.loss)
            object.__setattr__(self, "model", dataclasses.replace(self.model, transition_lags=lags))
            # remembered (not a field): overrides of the model or the loss resolve it afresh
            object.__setattr__(self, "_resolved_lags", True)
        _validate(self)

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
        return _build(cls, raw, source, prefix="")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_stored(cls, raw: dict[str, Any], source: str = "<stored>") -> ExperimentConfig:
        """A config a run stored (``to_dict``, every field written): a field it lacks did not
        exist when it was written and takes its ``LEGACY_VALUES`` value, the behaviour the
        run had, rather than today's default."""
        raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
        for (section, key), old in LEGACY_VALUES.items():
            if isinstance(raw.get(section), dict):
                raw[section].setdefault(key, old)
        return cls.from_dict(raw, source)

    @classmethod
    def from_yaml(cls, path: str | Path, stored: bool = False) -> ExperimentConfig:
        """Read an experiment YAML; ``stored``: a run's own config.yaml (``from_stored``)."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
        return (cls.from_stored if stored else cls.from_dict)(raw, source=str(path))

    def with_overrides(self, overrides: list[str]) -> ExperimentConfig:
        """Apply ``section.key=value`` overrides; values are parsed as YAML scalars."""
        raw = self.to_dict()
        if getattr(self, "_resolved_lags", False):
            raw["model"]["transition_lags"] = None
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {item!r} is not of the form key=value")
            node = raw
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"override {item!r}: unknown section {part!r}")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"override {item!r}: unknown key {key!r}")
            node[parts[-1]] = yaml.safe_load(value)
        return ExperimentConfig.from_dict(raw, source="overrides")


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix or 'config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(where + u for u in unknown)}; "
            f"allowed: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        key = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, source, key)
        else:
            kwargs[name] = _coerce(hint, value, source, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, source, key) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    return value


def _validate(cfg: ExperimentConfig) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    need(cfg.data.format in DATA_FORMATS, f"data.format must be one of {DATA_FORMATS}")
    need(cfg.data.kcore >= 0, "data.kcore must be >= 0")
    need(cfg.data.min_user_events >= 3, "data.min_user_events must be >= 3 (train + valid + test)")
    need(cfg.data.split in SPLITS, f"data.split must be one of {SPLITS}, got {cfg.data.split!r}")
    need(
        0.0 < cfg.data.split_valid_quantile < cfg.data.split_quantile < 1.0,
        "data.split_valid_quantile and data.split_quantile must satisfy 0 < valid < test < 1, got "
        f"{cfg.data.split_valid_quantile} and {cfg.data.split_quantile}",
    )
    names = ENCODER_NAMES + BASELINE_NAMES
    need(cfg.model.name in names, f"model.name must be one of {names}, got {cfg.model.name!r}")
    need(cfg.model.recent_days > 0, "model.recent_days must be > 0")
    need(cfg.train.loss in LOSS_NAMES, f"train.loss must be one of {LOSS_NAMES}, got {cfg.train.loss!r}")
    need(cfg.train.sampler in SAMPLER_NAMES, f"train.sampler must be one of {SAMPLER_NAMES}, got {cfg.train.sampler!r}")
    need(
        cfg.train.loss != "gbce" or cfg.train.sampler == "uniform",
        "train.loss=gbce needs train.sampler=uniform: its calibration assumes uniform negatives",
    )
    need(cfg.train.n_negatives > 0 and cfg.train.chunk_size > 0, "train.n_negatives and train.chunk_size must be > 0")
    need(cfg.train.negatives_per in NEGATIVES_PER, f"train.negatives_per must be one of {NEGATIVES_PER}")
    need(0.0 <= cfg.train.gbce_t <= 1.0, "train.gbce_t must be in [0, 1]")
    need(cfg.train.logit_precision in PRECISIONS, "train.logit_precision must be fp32 or bf16")
    need(cfg.train.encoder_precision in PRECISIONS, "train.encoder_precision must be fp32 or bf16")
    need(cfg.train.length_groups >= 1, "train.length_groups must be >= 1")
    need(cfg.train.length_bucket >= 1, "train.length_bucket must be >= 1")
    need(0.0 < cfg.train.mask_prob < 1.0, "train.mask_prob must be in (0, 1)")
    need(
        cfg.train.action_loss_weight >= 0 and cfg.train.purchase_loss_weight >= 0,
        "train.action_loss_weight and train.purchase_loss_weight must be >= 0",
    )
    need(cfg.train.purchase_horizon >= 0, "train.purchase_horizon must be >= 0 (0 = off)")
    need(0.0 <= cfg.model.head_dropout < 1.0 and (cfg.train.head_weight_decay or 0.0) >= 0 and cfg.train.churn_days >= 0
         and cfg.train.churn_loss_weight >= 0,
         "model.head_dropout must be in [0, 1); train.head_weight_decay, churn_days, churn_loss_weight >= 0")
    need(cfg.data.event_col is not None or not (cfg.model.time_gaps or cfg.model.item_relations or cfg.model.action_candidate
                                                or cfg.train.churn_days > 0 or cfg.train.calibrate),
         "model.time_gaps, model.action_candidate, train.churn_days and train.calibrate need data.event_col "
         "(the action heads)")
    need(cfg.eval.monitor != "behaviour_nll" or cfg.data.split == "temporal",
         "eval.monitor: behaviour_nll needs data.split: temporal (the validation window's moments)")
    need(cfg.train.item_loss_weight >= 0, "train.item_loss_weight must be >= 0")
    need(cfg.train.item_loss_weight > 0 or cfg.data.event_col is not None,
         "train.item_loss_weight = 0 leaves nothing to train without action heads (data.event_col)")
    need(not cfg.model.history_summary or cfg.model.time_gaps,
         "model.history_summary reads the time gaps: it needs model.time_gaps")
    need(cfg.train.churn_days == 0 or cfg.data.split == "temporal",
         "train.churn_days > 0 needs data.split: temporal (churn is trained and evaluated under a time split)")
    need(
        cfg.train.purchase_horizon == 0 or cfg.data.event_col is not None,
        "train.purchase_horizon > 0 needs data.event_col (the purchase label is an action type)",
    )
    bidirectional = cfg.model.name in ENCODERS and not ENCODERS[cfg.model.name].causal
    need(
        not (bidirectional and cfg.data.event_col is not None),
        "action tokens (data.event_col) are implemented for causal encoders only; "
        f"set data.event_col: null to train {cfg.model.name} on this log",
    )
    need(cfg.model.dim > 0 and cfg.model.n_blocks > 0, "model.dim and model.n_blocks must be > 0")
    need(cfg.model.dim % cfg.model.n_heads == 0, "model.dim must be divisible by model.n_heads")
    need(cfg.model.max_len > 0, "model.max_len must be > 0")
    need(cfg.model.transition_lags >= 0 and cfg.model.transition_width >= 1 and cfg.model.transition_ce_weight >= 0
         and (cfg.model.transition_em is None or cfg.model.transition_em >= 0),
         "model.transition_lags, model.transition_ce_weight and model.transition_em must be >= 0, "
         "model.transition_width >= 1")
    need(cfg.model.transition_lags == 0 or not bidirectional,
         f"model.transition_lags > 0 needs a causal encoder ({', '.join(n for n in ENCODERS if is_causal(n))}): "
         f"{cfg.model.name}'s cloze targets sit between masked positions, where 'the items before' is not "
         "the history it is served with")
    need(cfg.model.transition_lags == 0 or cfg.train.loss in SOFTMAX_LOSSES,
         "model.transition_lags > 0 mixes probabilities, so it needs a softmax loss (ce, ce_chunked or "
         f"sampled), not {cfg.train.loss!r}: (g)BCE scores are not probabilities")
    need(0.0 <= cfg.model.dropout < 1.0, "model.dropout must be in [0, 1)")
    need(0.0 <= cfg.model.bsarec_alpha <= 1.0, f"model.bsarec_alpha must be in [0, 1], got {cfg.model.bsarec_alpha}")
    need(cfg.model.bsarec_c >= 0, f"model.bsarec_c must be >= 0, got {cfg.model.bsarec_c}")
    need(cfg.model.ligr_ffn_mult >= 1, f"model.ligr_ffn_mult must be >= 1, got {cfg.model.ligr_ffn_mult}")
    need(cfg.model.name not in ENCODERS or ENCODERS[cfg.model.name].block != "bsarec"
         or cfg.model.bsarec_c // 2 < cfg.model.max_len // 2,
         f"model.bsarec_c = {cfg.model.bsarec_c} keeps every one of the {cfg.model.max_len // 2 + 1} frequencies of "
         "a max_len window, so the high band is empty: take c // 2 < max_len // 2")
    need(cfg.model.dropout_sampler in DROPOUT_SAMPLERS,
         f"model.dropout_sampler must be one of {DROPOUT_SAMPLERS}, got {cfg.model.dropout_sampler!r}")
    need(cfg.train.batch_size > 0 and cfg.train.lr > 0, "train.batch_size and train.lr must be > 0")
    need(cfg.train.max_epochs > 0, "train.max_epochs must be > 0")
    need(cfg.train.accelerator in ACCELERATORS,
         f"train.accelerator must be one of {ACCELERATORS}, got {cfg.train.accelerator!r}")
    need(cfg.train.devices >= 1 and cfg.train.num_nodes >= 1, "train.devices and train.num_nodes must be >= 1")
    need(cfg.train.logger in LOGGERS, f"train.logger must be one of {LOGGERS}, got {cfg.train.logger!r}")
    need(len(cfg.eval.ks) > 0 and all(k > 0 for k in cfg.eval.ks), "eval.ks must be positive")
    need(cfg.eval.batch_size > 0, "eval.batch_size must be > 0")
    metric, _, k = cfg.eval.monitor.partition("@")
    need(
        (metric in ("hr", "ndcg", "mrr") and k.isdigit() and int(k) in cfg.eval.ks)
        or cfg.eval.monitor in ACTION_MONITORS,
        f"eval.monitor must be hr|ndcg|mrr@K with K in eval.ks, or one of {sorted(ACTION_MONITORS)}, "
        f"got {cfg.eval.monitor!r}",
    )
    need(
        cfg.eval.monitor not in ACTION_MONITORS or cfg.data.event_col is not None,
        f"eval.monitor={cfg.eval.monitor} needs data.event_col (a next-action head)",
    )
