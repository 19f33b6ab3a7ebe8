"""SASRec / BERT4Rec: item (+ action, + attribute) + position embeddings, self-attention blocks.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018 (causal), and Sun
et al., "BERT4Rec", CIKM 2019 (the same blocks, bidirectional, trained by cloze). Inputs
are left-padded (B, L) token ids; output is one hidden state per position (B, L, D). The
item table is shared with the output layer (see ``heads``). The layers are any block of
``recsys.nn.blocks`` (``block``): SASRec's by default, BSARec's, HSTU's or LiGR's for the
models of those names (``recsys.config.ENCODERS``).

Optional parts exist only when switched on, so a plain SASRec keeps its state_dict keys:

- ``use_positions=False``: no positional embedding (the ablation);
- ``n_events > 0``: an action-type table, added at every position (``forward(inputs, events)``);
- ``item_attributes``: a mean-pooled bag of categorical attributes per item, added to the
  item's embedding in the input *and* in the tied output table, so an item is scored
  with the same vector it is read with. Items without attributes get a zero bag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recsys.config import DEFAULT_TRANSITION_LAGS, ENCODERS, EncoderSpec, ModelConfig  # noqa: F401 (importable here too)
from recsys.nn.blocks import build_block, options_from_config
from recsys.nn.heads import TransitionHead, score_items
from recsys.nn.kernels.grouped import group_by_length, grouped_forward  # noqa: F401 (group_by_length: importable here too)
from recsys.nn.layers import Dropout
from recsys.nn.losses import Mixture
from recsys.types import PAD_ID


class SASRecEncoder(nn.Module):
    def __init__(
        self,
        n_items: int,
        dim: int = 64,
        n_blocks: int = 2,
        n_heads: int = 1,
        max_len: int = 50,
        dropout: float = 0.2,
        causal: bool = True,
        use_positions: bool = True,
        n_events: int = 0,
        item_attributes: Sequence[Sequence[int]] | None = None,
        tied_output: bool = True,
        dropout_sampler: str = "bernoulli",
        transition_lags: int = 0,
        transition_width: int = 32,
        transition_ce_weight: float = 1.0,
        transition_em: int | None = 0,
        block: str = "sasrec",
        block_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``n_events``: action types 1..E (0 = padding), 0 = no action embedding.
        ``item_attributes[i]``: attribute ids (>= 1) of item token ``i + 1``, one entry per
        item 1..n; ``None`` = no attribute embedding. ``tied_output``: items are scored
        with the input table; off, with a separate (n + 1, D) output table.
        ``dropout_sampler``: one of ``recsys.nn.layers.DROPOUT_SAMPLERS``.
        ``transition_lags`` > 0 adds a ``TransitionHead`` over the last that many items
        (causal encoders only), ``transition_width`` targets per source item and lag, counted
        with ``transition_em`` EM iterations (0: raw counts; None: chosen from the data).
        ``block``: the layers, a name in ``recsys.nn.blocks.BLOCKS``; ``block_options``: that
        block's own keywords (its constructor types them)."""
        super().__init__()
        self.n_items, self.dim, self.max_len, self.causal = n_items, dim, max_len, causal
        self.item_emb = nn.Embedding(n_items + 2, dim, padding_idx=PAD_ID)  # PAD, items, MASK
        self.pos_emb = nn.Embedding(max_len, dim) if use_positions else None
        self.emb_drop = Dropout(dropout, dropout_sampler)
        self.blocks = nn.ModuleList(
            build_block(block, dim, n_heads, dropout, dropout_sampler, max_len=max_len, **(block_options or {}))
            for _ in range(n_blocks)
        )
        self.ln_f = nn.LayerNorm(dim)
        self.apply(self._init)
        # Optional tables are made after the core is initialised, so switching one on leaves
        # the core's initial weights (for one seed) exactly as in the plain model.
        self.event_emb = nn.Embedding(n_events + 1, dim, padding_idx=PAD_ID) if n_events > 0 else None
        self.attr_emb = None
        if item_attributes is not None:
            if len(item_attributes) != n_items:
                raise ValueError(f"item_attributes has {len(item_attributes)} entries for {n_items} items")
            # CSR over all tokens 0..n+1: PAD and MASK have empty bags.
            bags = [[], *item_attributes, []]
            lengths = torch.tensor([len(b) for b in bags], dtype=torch.int64)
            ids = torch.tensor([a for b in bags for a in b], dtype=torch.int64)
            if len(ids) and ids.min() < 1:
                raise ValueError("attribute ids must be >= 1 (0 is reserved)")
            n_attrs = int(ids.max()) if len(ids) else 0
            self.register_buffer("attr_ids", ids)
            self.register_buffer("attr_offsets", torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]))
            self.attr_emb = nn.EmbeddingBag(n_attrs + 1, dim, mode="mean", include_last_offset=True)
        self.out_emb = None if tied_output else nn.Embedding(n_items + 1, dim, padding_idx=PAD_ID)
        for extra in (self.event_emb, self.attr_emb, self.out_emb):
            if extra is not None:
                self._init(extra)
        if transition_lags and not causal:
            raise ValueError("the transition head reads the items before each position: causal encoders only")
        self.transitions = (
            TransitionHead(n_items, dim, transition_lags, transition_width, transition_ce_weight, transition_em)
            if transition_lags else None
        )

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        n_items: int,
        causal: bool = True,
        n_events: int = 0,
        item_attributes: Sequence[Sequence[int]] | None = None,
        block: str = "sasrec",
    ) -> SASRecEncoder:
        return cls(
            n_items, cfg.dim, cfg.n_blocks, cfg.n_heads, cfg.max_len, cfg.dropout,
            causal=causal, use_positions=cfg.use_positions, n_events=n_events, item_attributes=item_attributes,
            tied_output=cfg.tied_output, dropout_sampler=cfg.dropout_sampler,
            transition_lags=cfg.transition_lags if cfg.transition_lags is not None else (
                DEFAULT_TRANSITION_LAGS if causal else 0),
            transition_width=cfg.transition_width, transition_ce_weight=cfg.transition_ce_weight,
            transition_em=cfg.transition_em, block=block, block_options=options_from_config(cfg, block),
        )

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding, nn.EmbeddingBag)):
            nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def attention_mask(self, inputs: torch.Tensor) -> torch.Tensor:
        """Boolean (B, 1, L, L) mask, True where attention is allowed.

        Queries never see padding keys and, if causal, never see later positions.
        The diagonal is always allowed so a padding query has a well-defined (and
        ignored) output instead of a softmax over nothing.
        """
        L = inputs.shape[1]
        keep = (inputs != PAD_ID)[:, None, None, :]  # (B, 1, 1, L)
        if self.causal:
            keep = keep & torch.ones(L, L, dtype=torch.bool, device=inputs.device).tril()
        return keep | torch.eye(L, dtype=torch.bool, device=inputs.device)

    def token_table(self) -> torch.Tensor:
        """Embedding of every token 0..n+1 (PAD, items, MASK): the item row plus, with
        attributes on, the mean of the item's attribute embeddings. (V + 1, D)."""
        if self.attr_emb is None:
            return self.item_emb.weight
        return self.item_emb.weight + self.attr_emb(self.attr_ids, self.attr_offsets)

    def forward(
        self, inputs: torch.Tensor, events: torch.Tensor | None = None, length_groups: int = 1,
        positions: torch.Tensor | None = None, length_bucket: int = 1,
    ) -> torch.Tensor:
        """inputs: (B, L) token ids; events: (B, L) action ids, needed iff ``n_events > 0``.
        Returns (B, L, D); with ``positions`` ((B, L) bool), only those positions' outputs,
        (N, D) in row-major order, as ``forward(...)[positions]`` (what a loss reads).

        ``length_groups`` > 1 runs the rows in that many groups of similar history length,
        each trimmed to its longest row rounded up to a multiple of ``length_bucket``
        (``grouped_forward``): the same outputs at every real position, with less work spent
        on padding."""
        if length_groups > 1 and inputs.shape[0] > 1:
            return self.grouped_forward(inputs, events, length_groups, positions, length_bucket)
        x = self._embed(inputs, events)
        mask = self.attention_mask(inputs)
        for block in self.blocks:
            x = block(x, mask)
        out = self.ln_f(x)  # (B, L, D)
        return out if positions is None else out[positions]

    def grouped_forward(
        self, inputs: torch.Tensor, events: torch.Tensor | None, groups: int, positions: torch.Tensor | None = None,
        bucket: int = 1,
    ) -> torch.Tensor:
        """``forward`` over ``groups`` groups of rows of similar length, each trimmed to its
        longest row; (B, L, D) with zeros at padding positions, or with ``positions`` the
        (N, D) rows of those positions. The same outputs at every real position, and the
        same objective; only the dropout masks are laid out differently
        (``recsys.nn.kernels.grouped``)."""
        return grouped_forward(self.forward, inputs, events, groups, positions, bucket)

    def last_state(self, inputs: torch.Tensor, events: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D): the newest position's output, ``forward(inputs, events)[:, -1]``, for less work.

        Serving reads only that position. Every block but the last still runs over all
        positions (the last block's keys and values need them); the last block projects one
        query and runs its feed-forward for one row. Equal to the full forward up to float
        rounding, for both the causal and the bidirectional mask."""
        x = self._embed(inputs, events)
        mask = self.attention_mask(inputs)
        if not self.blocks:
            return self.ln_f(x[:, -1])
        for block in self.blocks[:-1]:
            x = block(x, mask)
        x = self.blocks[-1](x, mask[:, :, -1:], n_queries=1)  # (B, 1, D)
        return self.ln_f(x[:, 0])  # (B, D)

    def _embed(self, inputs: torch.Tensor, events: torch.Tensor | None) -> torch.Tensor:
        """(B, L) ids -> (B, L, D): scaled item (+ action) embedding, positions, dropout."""
        L = inputs.shape[1]
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds max_len {self.max_len}")
        if self.attr_emb is None:
            x = self.item_emb(inputs)  # (B, L, D)
        else:
            x = F.embedding(inputs, self.token_table())  # (B, L, D)
        if self.event_emb is not None:
            if events is None or events.shape != inputs.shape:
                raise ValueError("this encoder embeds action types: pass events with the shape of inputs")
            x = x + self.event_emb(events)
        x = x * math.sqrt(self.dim)
        if self.pos_emb is not None:
            # Left padding: the last column is the newest item, so positions count back from
            # the end and a row's positions do not depend on how long its batch-mates are.
            positions = torch.arange(self.max_len - L, self.max_len, device=inputs.device)  # (L,)
            x = x + self.pos_emb(positions)  # (B, L, D)
        return self.emb_drop(x * (inputs != PAD_ID).unsqueeze(-1))

    def score(self, state: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Scores (B, n + 1) of every token for the histories ``inputs`` (B, L) whose newest
        position's state is ``state`` (B, D): the dot product with the output table, or
        with a transition head its mixture's log-probabilities. Column PAD is -inf."""
        if self.transitions is None:
            return score_items(state, self.item_weights())
        return self.transitions.log_probs(state, self.item_weights(), inputs)

    def loss_mixture(
        self, hidden: torch.Tensor, inputs: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor
    ) -> Mixture | None:
        """The transition head's mixture terms (``recsys.nn.losses.Mixture``) at the selected
        ``positions`` (B, L) bool, whose states are ``hidden`` (N, D) and targets ``targets``
        (N,), in the row-major order a loss reads them; None without a head."""
        if self.transitions is None:
            return None
        base, rest = self.transitions.training_mixture(hidden, inputs, positions, targets)
        return Mixture(base, rest, self.transitions.ce_weight)

    def item_weights(self) -> torch.Tensor:
        """Output embeddings of the real items 1..n: the input table's rows (tied), or the
        separate output table's."""
        if self.out_emb is not None:
            return self.out_emb.weight[1 : self.n_items + 1]  # (V-1, D)
        return self.token_table()[1 : self.n_items + 1]  # (V-1, D)


def build_encoder(
    cfg: ModelConfig,
    n_items: int,
    n_events: int = 0,
    item_attributes: Sequence[Sequence[int]] | None = None,
) -> SASRecEncoder:
    if cfg.name not in ENCODERS:
        raise ValueError(f"unknown model {cfg.name!r}; choose from {sorted(ENCODERS)}")
    spec = ENCODERS[cfg.name]
    return SASRecEncoder.from_config(cfg, n_items, causal=spec.causal, n_events=n_events, item_attributes=item_attributes,
                                     block=spec.block)
