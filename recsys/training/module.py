"""A thin LightningModule: wraps a plain-torch encoder, picks the loss, logs metrics.

All model maths lives in ``recsys.nn``; all ranking maths in ``recsys.eval``. Validation
and test share one code path (``_eval_step``) and differ only in the stage name.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from recsys.eval.metrics import summarise
from recsys.eval.ranking import mask_seen, target_ranks
from recsys.nn.heads import last_state, score_items
from recsys.nn.losses import LOSSES
from recsys.types import Batch, EvalBatch


class SeqRecModule(pl.LightningModule):
    def __init__(
        self,
        encoder: torch.nn.Module,
        loss: str = "ce",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        ks: tuple[int, ...] = (1, 5, 10, 20),
        exclude_seen: bool = False,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {sorted(LOSSES)}")
        self.encoder = encoder
        self.loss_fn = LOSSES[loss]
        self.lr, self.weight_decay = lr, weight_decay
        self.ks, self.exclude_seen = tuple(ks), exclude_seen
        self._ranks: list[torch.Tensor] = []
        self.last_metrics: dict[str, dict[str, float]] = {}
        self.last_ranks: dict[str, torch.Tensor] = {}  # per-user ranks, in user order
        self.val_history: list[tuple[int, dict[str, float]]] = []

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        hidden = self.encoder(batch["inputs"])  # (B, L, D)
        loss = self.loss_fn(hidden, self.encoder.item_weights(), batch["targets"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["inputs"].shape[0])
        return loss

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        """Full-catalogue scores (B, V) for left-padded histories."""
        return score_items(last_state(self.encoder(inputs)), self.encoder.item_weights())

    def _eval_step(self, batch: EvalBatch) -> None:
        scores = self.score(batch["inputs"])  # (B, V)
        if self.exclude_seen:
            scores = mask_seen(scores, batch["seen_rows"], batch["seen_items"])
        self._ranks.append(target_ranks(scores, batch["targets"]))

    def _eval_end(self, stage: str) -> None:
        # Ranks of all users are concatenated before averaging, so metrics do not
        # depend on the evaluation batch size.
        ranks = torch.cat(self._ranks)
        self._ranks.clear()
        metrics = summarise(ranks, self.ks)
        self.last_metrics[stage] = metrics
        self.last_ranks[stage] = ranks
        if stage == "val" and not self.trainer.sanity_checking:
            self.val_history.append((self.current_epoch, metrics))
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "ndcg@10", sync_dist=False)

    def validation_step(self, batch: EvalBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: EvalBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
