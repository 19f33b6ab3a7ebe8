"""Thin LightningModules: wrap a plain-torch encoder (or a baseline), pick the loss, log metrics.

All model maths lives in ``recsys.nn``; all ranking maths in ``recsys.eval``. Every model,
neural or baseline, is evaluated by ``RankingModule``: validation and test share one
code path (``_eval_step``) and differ only in the stage name.

Under DDP each process scores its own users; at the end of an evaluation the per-user
results of all processes are gathered and ordered by user index, so every process computes
the same metrics over every user exactly once. In training each process weights its loss
by its share of the global batch's positions (``loss_shares``), so the gradient DDP
averages is the gradient of the one-process loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from recsys.baselines.base import Baseline
from recsys.config import PRECISIONS as ENCODER_PRECISIONS
from recsys.config import ExperimentConfig
from recsys.eval.actions import next_action_metrics, purchase_metrics
from recsys.eval.metrics import summarise
from recsys.eval.ranking import mask_seen, target_ranks
from recsys.nn.heads import (
    ActionHeads,
    candidate_history,
    event_tokens,
    history_summary,
    item_relations,
    relation_action_ids,
)
from recsys.nn.losses import LOSSES, NEGATIVES_NONE, NEGATIVES_ONE, Mixture, action_ce, purchase_bce
from recsys.training.negatives import NegativeSampler
from recsys.types import NO_LABEL, PAD_ID, Batch, EvalBatch


VAL_HISTORY_KEY = "recsys_val_history"


def loss_shares(local: torch.Tensor, total: torch.Tensor, world: int) -> list[float]:
    """Weights that turn per-process mean losses into the global mean's gradient.

    Each loss term is a mean over positions (the item loss over positions with a target).
    Process r holds ``local[t]`` of term t's ``total[t]`` positions; DDP averages gradients
    over ``world`` processes, so weighting r's mean by ``world * local / total`` gives
    ``(1 / world) sum_r world (n_r / N) mean_r = (1 / N) sum_i loss_i``: the mean over the
    whole global batch, as one process computes it. A term with no positions anywhere gets 0.
    """
    return (world * local.double() / total.double().clamp(min=1)).tolist()


class RankingModule(pl.LightningModule):
    """Full-catalogue evaluation shared by every model: subclasses give ``_eval_scores``."""

    def __init__(self, ks: tuple[int, ...] = (1, 5, 10, 20), exclude_seen: bool = False) -> None:
        super().__init__()
        self.ks, self.exclude_seen = tuple(ks), exclude_seen
        self._ranks: list[torch.Tensor] = []
        self._users: list[torch.Tensor] = []
        self.last_metrics: dict[str, dict[str, float]] = {}
        self.last_ranks: dict[str, torch.Tensor] = {}  # per-user ranks, in user order
        self.val_history: list[tuple[int, dict[str, float]]] = []

    def _eval_scores(self, batch: EvalBatch) -> torch.Tensor:
        """(B, V) scores of every token for each history; column PAD is -inf."""
        raise NotImplementedError

    # The validation history picks the run's best epoch. It travels in the resume checkpoint,
    # so a resumed run reports the best epoch over all its epochs, not only the resumed ones.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[VAL_HISTORY_KEY] = [(int(epoch), {k: float(v) for k, v in m.items()}) for epoch, m in self.val_history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_history = [(int(epoch), dict(m)) for epoch, m in checkpoint.get(VAL_HISTORY_KEY, [])]

    def rank(self, batch: EvalBatch) -> torch.Tensor:
        """(B,) each history's target rank over the whole catalogue (1 = top, ties
        pessimistic, seen items masked with ``exclude_seen``): what validation and test
        record per user, here for one batch and kept nowhere."""
        return self._ranks_of(self._eval_scores(batch), batch)

    def _ranks_of(self, scores: torch.Tensor, batch: EvalBatch) -> torch.Tensor:
        if self.exclude_seen:
            scores = mask_seen(scores, batch["seen_rows"], batch["seen_items"])
        return target_ranks(scores, batch["targets"])

    def _eval_step(self, batch: EvalBatch) -> None:
        self._record(self.rank(batch), batch)

    def _record(self, ranks: torch.Tensor, batch: EvalBatch) -> None:
        self._ranks.append(ranks)
        self._users.append(batch["users"])

    def _all_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Rows of ``local`` from every process, concatenated in rank order.

        all_gather needs one shape everywhere, and the processes' user counts differ by up
        to one: each pads to the longest, and the padding is cut off by the gathered counts.
        """
        counts = self.all_gather(torch.tensor([local.shape[0]], device=local.device)).view(-1).tolist()  # (W,)
        pad = local.new_zeros((max(counts) - local.shape[0], *local.shape[1:]))
        gathered = self.all_gather(torch.cat([local, pad]))  # (W, max(counts), ...)
        return torch.cat([gathered[r, :n] for r, n in enumerate(counts)])

    def _by_user(self, columns: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-user ``columns`` (this process's users, in its batch order) of every process,
        on the CPU, ordered by user index; a user seen twice is an error, never averaged in."""
        users = torch.cat(self._users) if self._users else torch.empty(0, dtype=torch.int64, device=self.device)
        if self.trainer.world_size > 1:
            users = self._all_rows(users)
            columns = {k: self._all_rows(v) for k, v in columns.items()}
        users = users.cpu()
        order = torch.argsort(users, stable=True)
        users = users[order]
        if (users[1:] == users[:-1]).any():
            raise RuntimeError("evaluation scored a user more than once: the processes' user shards overlap")
        return {k: v.cpu()[order] for k, v in columns.items()}

    def _eval_end(self, stage: str, extra: dict[str, float] | None = None) -> None:
        """``extra``: further scalars (e.g. next-action metrics) to log and to keep in the
        validation history, so they can drive model selection; ``last_metrics`` stays ranking."""
        # Ranks of all users (of all processes) are concatenated before averaging, so
        # metrics depend neither on the evaluation batch size nor on the process count.
        ranks = self._by_user({"ranks": torch.cat(self._ranks)})["ranks"]
        self._ranks.clear()
        self._users.clear()
        metrics = summarise(ranks, self.ks)
        self.last_metrics[stage] = metrics
        self.last_ranks[stage] = ranks
        logged = {**metrics, **(extra or {})}
        # Only the epochs of training: the final re-validation of the best weights (a separate
        # evaluator Trainer, at its epoch 0) would otherwise enter as a spurious "epoch 0".
        if stage == "val" and self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.val_history.append((self.current_epoch, logged))
        for name, value in logged.items():
            # Already the all-process value, equal on every process: max over processes is
            # an exact no-op (a mean need not be), and marks the value as synchronised.
            self.log(f"{stage}/{name}", value, prog_bar=name == "ndcg@10", sync_dist=True, reduce_fx="max")

    def validation_step(self, batch: EvalBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: EvalBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")


@dataclass(frozen=True)
class TrainSettings:
    """What ``SeqRecModule`` needs from the config besides the parts it is given (encoder,
    negative sampler, action heads); ``from_config`` reads them from an ``ExperimentConfig``.

    ``loss`` names a ``recsys.nn.losses.LOSSES`` entry and ``loss_options`` are its keyword
    options (e.g. ``chunk_size``). Losses that need negatives draw them from the module's
    sampler: ``bce`` one per position; ``sampled`` and ``gbce`` ``n_negatives``, shared by
    the batch (``negatives_per="batch"``) or drawn for each position (``"position"``).
    With action heads, next-action CE is weighted by ``action_loss_weight`` and, if the heads
    have one, purchase-within-k BCE by ``purchase_loss_weight``; ``event_names`` label the
    next-action metrics. Heads with a candidate-conditioned next-action head add its
    cross-entropy with ``action_loss_weight`` too, and a churn head its BCE with
    ``churn_loss_weight``; ``head_weight_decay`` (None: ``weight_decay``) is the heads' own.
    ``time_gaps`` / ``item_relations``: the encoder reads (action, time-gap bucket, item
    relation) tokens (``recsys.nn.heads.event_tokens``). ``length_groups`` > 1: each training batch runs through the encoder
    in that many groups of rows of similar length (``SASRecEncoder.grouped_forward``), each
    group's width rounded up to a multiple of ``length_bucket``.
    ``encoder_precision="bf16"``: the encoder's training forward under bf16 autocast.
    """

    loss: str = "ce"
    lr: float = 1e-3
    weight_decay: float = 0.0
    ks: tuple[int, ...] = (1, 5, 10, 20)
    exclude_seen: bool = False
    loss_options: Mapping[str, Any] = field(default_factory=dict)
    n_negatives: int = 256
    negatives_per: str = "batch"
    logq_correction: bool = True
    action_loss_weight: float = 0.5
    purchase_loss_weight: float = 0.5
    event_names: tuple[str, ...] = ()
    length_groups: int = 1
    length_bucket: int = 1
    encoder_precision: str = "fp32"
    churn_loss_weight: float = 0.5
    head_weight_decay: float | None = None
    time_gaps: bool = False
    item_relations: bool = False
    relation_ids: tuple[int, int] = (0, 0)  # (cart, purchase) action ids that item_relations reads
    item_loss_weight: float = 1.0  # 0: the heads' losses only (no catalogue softmax)
    history_summary: bool = False  # the heads read recsys.nn.heads.history_summary beside the state

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {sorted(LOSSES)}")
        if self.negatives_per not in ("batch", "position"):
            raise ValueError(f"negatives_per must be 'batch' or 'position', got {self.negatives_per!r}")
        if self.length_groups < 1:
            raise ValueError(f"length_groups must be >= 1, got {self.length_groups}")
        if self.length_bucket < 1:
            raise ValueError(f"length_bucket must be >= 1, got {self.length_bucket}")
        if self.encoder_precision not in ENCODER_PRECISIONS:
            raise ValueError(
                f"encoder_precision must be one of {ENCODER_PRECISIONS}, got {self.encoder_precision!r}")
        object.__setattr__(self, "ks", tuple(self.ks))
        object.__setattr__(self, "loss_options", dict(self.loss_options))
        object.__setattr__(self, "event_names", tuple(self.event_names))

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, event_names: Sequence[str] = ()) -> TrainSettings:
        t = cfg.train
        return cls(
            loss=t.loss, lr=t.lr, weight_decay=t.weight_decay, ks=cfg.eval.ks, exclude_seen=cfg.eval.exclude_seen,
            loss_options={arg: getattr(t, name) for arg, name in LOSSES[t.loss].options.items()},
            n_negatives=t.n_negatives, negatives_per=t.negatives_per, logq_correction=t.logq_correction,
            action_loss_weight=t.action_loss_weight, purchase_loss_weight=t.purchase_loss_weight,
            event_names=tuple(event_names), length_groups=t.length_groups, length_bucket=t.length_bucket,
            encoder_precision=t.encoder_precision,
            churn_loss_weight=t.churn_loss_weight, head_weight_decay=t.head_weight_decay,
            time_gaps=cfg.model.time_gaps and cfg.model.use_actions,
            item_relations=cfg.model.item_relations and cfg.model.use_actions,
            relation_ids=relation_action_ids(event_names, t.purchase_event),
            item_loss_weight=t.item_loss_weight,
            history_summary=cfg.model.history_summary,
        )


class SeqRecModule(RankingModule):
    """A trained encoder: ``settings`` (``TrainSettings``) pick the loss and the optimiser;
    ``sampler`` draws the negatives of losses that need them; ``heads`` (logs with action
    types) add the next-action and purchase losses. ``step_loss`` is one training step's
    loss as a plain function of a batch; ``training_step`` adds DDP weights and logging."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        settings: TrainSettings | None = None,
        sampler: NegativeSampler | None = None,
        heads: ActionHeads | None = None,
    ) -> None:
        settings = TrainSettings() if settings is None else settings
        super().__init__(settings.ks, settings.exclude_seen)
        self.settings = settings
        self.encoder = encoder
        self.loss_spec = LOSSES[settings.loss]
        if self.loss_spec.negatives != NEGATIVES_NONE and sampler is None:
            raise ValueError(f"loss {settings.loss!r} needs a negative sampler")
        self.sampler = sampler
        self.heads = heads  # registered (and in the state_dict) only when the log has actions
        self._actions: list[dict[str, torch.Tensor]] = []
        # more validation metrics, computed from the module itself (e.g. the behaviour
        # monitor, recsys.training.behaviour.BehaviourMonitor): module -> {name: value}
        self.extra_validation: Callable[[SeqRecModule], dict[str, float]] | None = None
        self.last_action_outputs: dict[str, dict[str, np.ndarray]] = {}
        self.last_action_metrics: dict[str, dict] = {}

    # ---- training -------------------------------------------------------------------
    def _item_loss(self, hidden: torch.Tensor, targets: torch.Tensor, mixture: Mixture | None = None) -> torch.Tensor:
        s = self.settings
        spec, kwargs = self.loss_spec, dict(s.loss_options)
        if mixture is not None:
            kwargs["mixture"] = mixture
        if spec.negatives != NEGATIVES_NONE:
            if spec.negatives == NEGATIVES_ONE:
                shape = (*targets.shape, 1)
            elif s.negatives_per == "position":
                shape = (*targets.shape, s.n_negatives)
            else:
                shape = (s.n_negatives,)
            negatives, log_q = self.sampler(targets, shape)  # drawn on the CPU generator
            kwargs["negatives"] = negatives.to(targets.device)
            if spec.log_q and s.logq_correction:
                kwargs["log_q"] = log_q.to(targets.device)
        return spec.fn(hidden, self.encoder.item_weights(), targets, **kwargs)

    def encoder_events(self, batch: Batch | EvalBatch) -> torch.Tensor | None:
        """What the encoder reads beside the items: the action ids, or with ``time_gaps``
        the (action, gap bucket) tokens; None without actions."""
        s, events = self.settings, batch.get("events")
        if events is None or not (s.time_gaps or s.item_relations):
            return events
        relations = item_relations(batch["inputs"], events, *s.relation_ids) if s.item_relations else None
        return event_tokens(events, self.heads.n_events, batch["gaps"] if s.time_gaps else None, relations)

    def summary(self, batch: Batch | EvalBatch) -> torch.Tensor | None:
        """(B, L, S) the heads' wide features of the window (``model.history_summary``), or None."""
        if not self.settings.history_summary:
            return None
        return history_summary(batch["inputs"], batch["events"], batch["gaps"], self.heads.n_events,
                               *self.settings.relation_ids)

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One training step's loss terms, each the mean over its own positions: ``item``
        and, with action heads, ``action`` (and ``purchase``, ``candidate``, ``churn`` if
        the heads have them)."""
        targets, positions = batch["targets"], None
        if self.heads is None and self.loss_spec.negatives == NEGATIVES_NONE:
            # a full-softmax loss reads only the positions with a target: the encoder hands
            # over just those, (N, D), and never builds the (B, L, D) tensor
            positions = targets != PAD_ID
            targets = targets[positions]  # (N,)
        with self.training_autocast():
            hidden = self.encoder(batch["inputs"], self.encoder_events(batch), self.settings.length_groups, positions,
                                  self.settings.length_bucket)
        hidden = hidden.float()  # the losses and heads take fp32 (a no-op without autocast)
        mixture = None
        if self.encoder.transitions is not None:
            if positions is not None:  # the encoder handed over the kept positions already
                kept, kept_hidden, kept_targets = positions, hidden, targets
            else:
                kept = batch["targets"] != PAD_ID
                kept_hidden, kept_targets = hidden[kept], targets[kept]
            mixture = self.encoder.loss_mixture(kept_hidden, batch["inputs"], kept, kept_targets)
        # with item_loss_weight 0 (a behaviour model) the catalogue softmax is not computed
        terms = {"item": self._item_loss(hidden, targets, mixture) if self.settings.item_loss_weight > 0
                 else hidden.sum() * 0.0}
        if self.heads is not None:
            summary = self.summary(batch)  # (B, L, S) | None
            action_logits, purchase_logits = self.heads(hidden, summary)  # (B, L, E), (B, L) | None
            terms["action"] = action_ce(action_logits, batch["next_events"])
            if purchase_logits is not None:
                terms["purchase"] = purchase_bce(purchase_logits, batch["purchase"])
            if self.heads.candidate is not None:
                terms["candidate"] = self._candidate_loss(hidden, batch, summary)
            if self.heads.churn is not None:
                label = batch["churn_label"]
                keep = label != NO_LABEL
                logits = self.heads.churn_logit(hidden[keep], batch["churn_elapsed"][keep],
                                                None if summary is None else summary[keep])  # (N,)
                terms["churn"] = purchase_bce(logits, label[keep])
        return terms

    def _candidate_loss(self, hidden: torch.Tensor, batch: Batch, summary: torch.Tensor | None = None) -> torch.Tensor:
        """Next-action CE of the candidate head: at each position the candidate is the true
        next event (its item ``targets``, its gap ``next_gaps``). hidden: (B, L, D)."""
        nxt, cand = batch["next_events"], batch["targets"]
        keep = nxt != PAD_ID
        history = candidate_history(batch["inputs"], batch["events"], cand, self.heads.n_events)  # (B, L, E)
        item = self.encoder.item_weights()[(cand[keep] - 1).clamp(min=0)]  # (N, D)
        logits = self.heads.candidate_logits(hidden[keep], item, history[keep], batch["next_gaps"][keep],
                                             None if summary is None else summary[keep])
        return action_ce(logits, nxt[keep])

    def total_loss(self, terms: Mapping[str, torch.Tensor], shares: Sequence[float] = (1.0,) * 5) -> torch.Tensor:
        """The weighted sum of ``loss_terms``; ``shares`` weight this process's item, action,
        purchase, candidate and churn means (``loss_shares``; all 1 on one process)."""
        s = self.settings
        shares = (*shares, *(1.0,) * (5 - len(shares)))
        loss = s.item_loss_weight * shares[0] * terms["item"]
        if "action" in terms:
            loss = loss + s.action_loss_weight * shares[1] * terms["action"]
        if "purchase" in terms:
            loss = loss + s.purchase_loss_weight * shares[2] * terms["purchase"]
        if "candidate" in terms:
            loss = loss + s.action_loss_weight * shares[3] * terms["candidate"]
        if "churn" in terms:
            loss = loss + s.churn_loss_weight * shares[4] * terms["churn"]
        return loss

    def step_loss(self, batch: Batch) -> torch.Tensor:
        """The loss one training step minimises on ``batch`` (one process), without logging;
        what ``benchmarks/speed.py`` times."""
        return self.total_loss(self.loss_terms(batch))

    def _shares(self, batch: Batch) -> list[float]:
        """Weight of this process's item, action, purchase, candidate and churn losses
        (``loss_shares``); all ones on one process. Every process calls it at every step: it all-reduces."""
        if self.trainer.world_size == 1:
            return [1.0] * 5
        zero = batch["targets"].new_zeros(())
        actions = (batch["next_events"] != PAD_ID).sum() if "next_events" in batch else zero
        local = torch.stack([
            (batch["targets"] != PAD_ID).sum(),
            actions,
            (batch["purchase"] != NO_LABEL).sum() if "purchase" in batch else zero,
            actions,  # the candidate head scores the same positions
            (batch["churn_label"] != NO_LABEL).sum() if "churn_label" in batch else zero,
        ])  # (5,) positions each mean runs over, here
        total = self.trainer.strategy.reduce(local.clone(), reduce_op="sum")  # (5,) over the global batch
        return loss_shares(local, total, self.trainer.world_size)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        B = batch["inputs"].shape[0]
        shares = self._shares(batch)
        if shares[0] == 0.0:
            # This process's slice of a short last batch is empty. A zero loss that touches
            # every parameter keeps DDP's gradient sync in step and adds nothing to the sum.
            return sum(p.sum() for p in self.parameters()) * 0.0
        terms = self.loss_terms(batch)
        # Logged values are this process's means; the returned loss is weighted by its share.
        if self.heads is not None:
            for name, value in terms.items():
                self.log(f"train/{name}_loss", value, on_step=False, on_epoch=True, batch_size=B)
        self.log("train/loss", self.total_loss(terms), prog_bar=True, on_step=True, on_epoch=True, batch_size=B)
        return self.total_loss(terms, shares)

    def training_autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast around the training forward of the encoder (``encoder_precision``).
        On CPU, autocast runs the linear layers and the attention products in bf16; what
        follows them in a branch (attention softmax, GELU, dropout) then works on their bf16
        outputs, while the residual stream stays fp32 (adding a bf16 branch to it promotes),
        and so do the layer norms that read it. Evaluation always runs fp32."""
        if self.settings.encoder_precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def configure_optimizers(self):
        s = self.settings
        if self.heads is None or s.head_weight_decay is None:
            return torch.optim.Adam(self.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        heads = {id(p) for p in self.heads.parameters()}
        groups = [{"params": [p for p in self.parameters() if id(p) not in heads], "weight_decay": s.weight_decay},
                  {"params": list(self.heads.parameters()), "weight_decay": s.head_weight_decay}]
        return torch.optim.Adam(groups, lr=s.lr)

    # ---- evaluation -----------------------------------------------------------------
    def score(self, inputs: torch.Tensor, events: torch.Tensor | None = None) -> torch.Tensor:
        """Full-catalogue scores (B, V) for left-padded histories."""
        return self.encoder.score(self.encoder.last_state(inputs, events), inputs)

    def _eval_scores(self, batch: EvalBatch) -> torch.Tensor:
        return self.score(batch["inputs"], self.encoder_events(batch))

    def _eval_step(self, batch: EvalBatch) -> None:
        if self.heads is None:
            super()._eval_step(batch)
            return
        # one encoder pass serves the ranks and the action heads' outputs
        state = self.encoder.last_state(batch["inputs"], self.encoder_events(batch))  # (B, D)
        summary = self.summary(batch)
        action_logits, purchase_logits = self.heads(state, None if summary is None else summary[:, -1])
        out = {
            "probs": action_logits.softmax(dim=-1),
            "targets": batch["next_events"] - 1,
            "last": batch["events"][:, -1] - 1,
        }
        if purchase_logits is not None:
            out["purchase_prob"] = purchase_logits.sigmoid()
            out["purchase_label"] = batch["purchase"]
        self._actions.append(out)
        self._record(self._ranks_of(self.encoder.score(state, batch["inputs"]), batch), batch)

    def _eval_end(self, stage: str, extra: dict[str, float] | None = None) -> None:
        if not self._actions:
            super()._eval_end(stage, extra)
            return
        outputs = {k: v.numpy() for k, v in self._by_user(
            {k: torch.cat([a[k] for a in self._actions]) for k in self._actions[0]}).items()}
        self._actions.clear()
        metrics = {"next_action": next_action_metrics(outputs["probs"], outputs["targets"], self.settings.event_names)}
        if "purchase_prob" in outputs:
            metrics["purchase"] = purchase_metrics(outputs["purchase_prob"], outputs["purchase_label"])
        self.last_action_outputs[stage] = outputs
        self.last_action_metrics[stage] = metrics
        na = metrics["next_action"]
        actions = {"action_accuracy": na["accuracy"], "action_macro_f1": na["macro_f1"], "action_nll": na["log_loss"]}
        if stage == "val" and self.extra_validation is not None:
            actions.update(self.extra_validation(self))
        super()._eval_end(stage, {**actions, **(extra or {})})


class BaselineModule(RankingModule):
    """A fitted baseline behind the same evaluation path; it has nothing to train."""

    def __init__(self, baseline: Baseline, ks: tuple[int, ...] = (1, 5, 10, 20), exclude_seen: bool = False) -> None:
        super().__init__(ks, exclude_seen)
        self.baseline = baseline

    def _eval_scores(self, batch: EvalBatch) -> torch.Tensor:
        return self.baseline.score(batch["inputs"])
