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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from recsys.baselines.base import Baseline
from recsys.config import PRECISIONS as ENCODER_PRECISIONS
from recsys.eval.actions import next_action_metrics, purchase_metrics
from recsys.eval.metrics import summarise
from recsys.eval.ranking import mask_seen, target_ranks
from recsys.nn.heads import ActionHeads
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

    def _eval_step(self, batch: EvalBatch) -> None:
        scores = self._eval_scores(batch)  # (B, V)
        if self.exclude_seen:
            scores = mask_seen(scores, batch["seen_rows"], batch["seen_items"])
        self._ranks.append(target_ranks(scores, batch["targets"]))
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


class SeqRecModule(RankingModule):
    """A trained encoder. ``loss`` names a ``recsys.nn.losses.LOSSES`` entry; ``loss_options``
    are its keyword options (e.g. ``chunk_size``); losses that need negatives draw them
    from ``sampler``: ``bce`` one per position; ``sampled`` and ``gbce`` ``n_negatives``,
    shared by the batch (``negatives_per="batch"``) or drawn for each position (``"position"``).

    ``heads`` (logs with action types): next-action CE weighted by ``action_loss_weight``
    and, if the heads have one, purchase-within-k BCE weighted by ``purchase_loss_weight``.

    ``length_groups`` > 1: each training batch runs through the encoder in that many groups
    of rows of similar length, each trimmed to its longest row (``SASRecEncoder.grouped_forward``).
    ``encoder_precision="bf16"``: the encoder's training forward under bf16 autocast.
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        loss: str = "ce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        ks: tuple[int, ...] = (1, 5, 10, 20),
        exclude_seen: bool = False,
        loss_options: Mapping[str, Any] | None = None,
        sampler: NegativeSampler | None = None,
        n_negatives: int = 256,
        negatives_per: str = "batch",
        logq_correction: bool = True,
        heads: ActionHeads | None = None,
        action_loss_weight: float = 0.5,
        purchase_loss_weight: float = 0.5,
        event_names: Sequence[str] = (),
        length_groups: int = 1,
        encoder_precision: str = "fp32",
    ) -> None:
        super().__init__(ks, exclude_seen)
        if length_groups < 1:
            raise ValueError(f"length_groups must be >= 1, got {length_groups}")
        if encoder_precision not in ENCODER_PRECISIONS:
            raise ValueError(f"encoder_precision must be one of {ENCODER_PRECISIONS}, got {encoder_precision!r}")
        self.length_groups, self.encoder_precision = length_groups, encoder_precision
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {sorted(LOSSES)}")
        self.encoder = encoder
        self.loss_spec = LOSSES[loss]
        if self.loss_spec.negatives != NEGATIVES_NONE and sampler is None:
            raise ValueError(f"loss {loss!r} needs a negative sampler")
        self.loss_options = dict(loss_options or {})
        if negatives_per not in ("batch", "position"):
            raise ValueError(f"negatives_per must be 'batch' or 'position', got {negatives_per!r}")
        self.sampler, self.n_negatives, self.logq_correction = sampler, n_negatives, logq_correction
        self.negatives_per = negatives_per
        self.lr, self.weight_decay = lr, weight_decay
        self.heads = heads  # registered (and in the state_dict) only when the log has actions
        self.action_loss_weight, self.purchase_loss_weight = action_loss_weight, purchase_loss_weight
        self.event_names = tuple(event_names)
        self._actions: list[dict[str, torch.Tensor]] = []
        self.last_action_outputs: dict[str, dict[str, np.ndarray]] = {}
        self.last_action_metrics: dict[str, dict] = {}

    # ---- training -------------------------------------------------------------------
    def _item_loss(self, hidden: torch.Tensor, targets: torch.Tensor, mixture: Mixture | None = None) -> torch.Tensor:
        spec, kwargs = self.loss_spec, dict(self.loss_options)
        if mixture is not None:
            kwargs["mixture"] = mixture
        if spec.negatives != NEGATIVES_NONE:
            if spec.negatives == NEGATIVES_ONE:
                shape = (*targets.shape, 1)
            elif self.negatives_per == "position":
                shape = (*targets.shape, self.n_negatives)
            else:
                shape = (self.n_negatives,)
            negatives, log_q = self.sampler(targets, shape)  # drawn on the CPU generator
            kwargs["negatives"] = negatives.to(targets.device)
            if spec.log_q and self.logq_correction:
                kwargs["log_q"] = log_q.to(targets.device)
        return spec.fn(hidden, self.encoder.item_weights(), targets, **kwargs)

    def _shares(self, batch: Batch) -> list[float]:
        """Weight of this process's item, action and purchase losses (``loss_shares``);
        all ones on one process. Every process calls it at every step: it all-reduces."""
        if self.trainer.world_size == 1:
            return [1.0, 1.0, 1.0]
        local = torch.stack([
            (batch["targets"] != PAD_ID).sum(),
            (batch["next_events"] != PAD_ID).sum() if "next_events" in batch else batch["targets"].new_zeros(()),
            (batch["purchase"] != NO_LABEL).sum() if "purchase" in batch else batch["targets"].new_zeros(()),
        ])  # (3,) positions each mean runs over, here
        total = self.trainer.strategy.reduce(local.clone(), reduce_op="sum")  # (3,) over the global batch
        return loss_shares(local, total, self.trainer.world_size)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        B = batch["inputs"].shape[0]
        item_share, action_share, purchase_share = self._shares(batch)
        if item_share == 0.0:
            # This process's slice of a short last batch is empty. A zero loss that touches
            # every parameter keeps DDP's gradient sync in step and adds nothing to the sum.
            return sum(p.sum() for p in self.parameters()) * 0.0
        # Logged values are this process's means; the returned loss is weighted by its share.
        targets, positions = batch["targets"], None
        if self.heads is None and self.loss_spec.negatives == NEGATIVES_NONE:
            # a full-softmax loss reads only the positions with a target: the encoder hands
            # over just those, (N, D), and never builds the (B, L, D) tensor
            positions = targets != PAD_ID
            targets = targets[positions]  # (N,)
        with self._training_autocast():
            hidden = self.encoder(batch["inputs"], batch.get("events"), self.length_groups, positions)
        hidden = hidden.float()  # the losses and heads take fp32 (a no-op without autocast)
        mixture = None
        if self.encoder.transitions is not None:
            if positions is not None:  # the encoder handed over the kept positions already
                kept, kept_hidden, kept_targets = positions, hidden, targets
            else:
                kept = batch["targets"] != PAD_ID
                kept_hidden, kept_targets = hidden[kept], targets[kept]
            mixture = self.encoder.loss_mixture(kept_hidden, batch["inputs"], kept, kept_targets)
        item = self._item_loss(hidden, targets, mixture)
        logged, loss = item, item_share * item
        if self.heads is not None:
            self.log("train/item_loss", item, on_step=False, on_epoch=True, batch_size=B)
            action_logits, purchase_logits = self.heads(hidden)  # (B, L, E), (B, L) | None
            action = action_ce(action_logits, batch["next_events"])
            self.log("train/action_loss", action, on_step=False, on_epoch=True, batch_size=B)
            logged = logged + self.action_loss_weight * action
            loss = loss + self.action_loss_weight * action_share * action
            if purchase_logits is not None:
                purchase = purchase_bce(purchase_logits, batch["purchase"])
                self.log("train/purchase_loss", purchase, on_step=False, on_epoch=True, batch_size=B)
                logged = logged + self.purchase_loss_weight * purchase
                loss = loss + self.purchase_loss_weight * purchase_share * purchase
        self.log("train/loss", logged, prog_bar=True, on_step=True, on_epoch=True, batch_size=B)
        return loss

    def _training_autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast around the training forward of the encoder (``encoder_precision``).
        On CPU, autocast runs the linear layers and the attention products in bf16; what
        follows them in a branch (attention softmax, GELU, dropout) then works on their bf16
        outputs, while the residual stream stays fp32 (adding a bf16 branch to it promotes),
        and so do the layer norms that read it. Evaluation always runs fp32."""
        if self.encoder_precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # ---- evaluation -----------------------------------------------------------------
    def score(self, inputs: torch.Tensor, events: torch.Tensor | None = None) -> torch.Tensor:
        """Full-catalogue scores (B, V) for left-padded histories."""
        return self.encoder.score(self.encoder.last_state(inputs, events), inputs)

    def _eval_scores(self, batch: EvalBatch) -> torch.Tensor:
        state = self.encoder.last_state(batch["inputs"], batch.get("events"))  # (B, D)
        if self.heads is not None:
            action_logits, purchase_logits = self.heads(state)
            out = {
                "probs": action_logits.softmax(dim=-1),
                "targets": batch["next_events"] - 1,
                "last": batch["events"][:, -1] - 1,
            }
            if purchase_logits is not None:
                out["purchase_prob"] = purchase_logits.sigmoid()
                out["purchase_label"] = batch["purchase"]
            self._actions.append(out)
        return self.encoder.score(state, batch["inputs"])

    def _eval_end(self, stage: str, extra: dict[str, float] | None = None) -> None:
        if not self._actions:
            super()._eval_end(stage, extra)
            return
        outputs = {k: v.numpy() for k, v in self._by_user(
            {k: torch.cat([a[k] for a in self._actions]) for k in self._actions[0]}).items()}
        self._actions.clear()
        metrics = {"next_action": next_action_metrics(outputs["probs"], outputs["targets"], self.event_names)}
        if "purchase_prob" in outputs:
            metrics["purchase"] = purchase_metrics(outputs["purchase_prob"], outputs["purchase_label"])
        self.last_action_outputs[stage] = outputs
        self.last_action_metrics[stage] = metrics
        na = metrics["next_action"]
        actions = {"action_accuracy": na["accuracy"], "action_macro_f1": na["macro_f1"], "action_nll": na["log_loss"]}
        super()._eval_end(stage, {**actions, **(extra or {})})


class BaselineModule(RankingModule):
    """A fitted baseline behind the same evaluation path; it has nothing to train."""

    def __init__(self, baseline: Baseline, ks: tuple[int, ...] = (1, 5, 10, 20), exclude_seen: bool = False) -> None:
        super().__init__(ks, exclude_seen)
        self.baseline = baseline

    def _eval_scores(self, batch: EvalBatch) -> torch.Tensor:
        return self.baseline.score(batch["inputs"])
