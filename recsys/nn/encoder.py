"""SASRec: item + learned position embeddings, causal self-attention blocks.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018. Inputs are
left-padded (B, L) token ids; output is one hidden state per position (B, L, D). The
item table is shared with the output layer (see ``heads``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recsys.config import ModelConfig
from recsys.nn.layers import Block
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
    ) -> None:
        super().__init__()
        self.n_items, self.dim, self.max_len, self.causal = n_items, dim, max_len, causal
        self.item_emb = nn.Embedding(n_items + 2, dim, padding_idx=PAD_ID)  # PAD, items, MASK
        self.pos_emb = nn.Embedding(max_len, dim)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout) for _ in range(n_blocks))
        self.ln_f = nn.LayerNorm(dim)
        self.apply(self._init)

    @classmethod
    def from_config(cls, cfg: ModelConfig, n_items: int) -> SASRecEncoder:
        return cls(n_items, cfg.dim, cfg.n_blocks, cfg.n_heads, cfg.max_len, cfg.dropout)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
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

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        B, L = inputs.shape
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds max_len {self.max_len}")
        # Left padding: the last column is the newest item, so positions count back from
        # the end and a row's positions do not depend on how long its batch-mates are.
        positions = torch.arange(self.max_len - L, self.max_len, device=inputs.device)  # (L,)
        x = self.item_emb(inputs) * math.sqrt(self.dim) + self.pos_emb(positions)  # (B, L, D)
        x = self.emb_drop(x * (inputs != PAD_ID).unsqueeze(-1))
        mask = self.attention_mask(inputs)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)  # (B, L, D)

    def item_weights(self) -> torch.Tensor:
        """Output embeddings of the real items 1..n (tied to the input table)."""
        return self.item_emb.weight[1 : self.n_items + 1]  # (V-1, D)


ENCODERS: dict[str, type[nn.Module]] = {"sasrec": SASRecEncoder}


def build_encoder(cfg: ModelConfig, n_items: int) -> nn.Module:
    if cfg.name not in ENCODERS:
        raise ValueError(f"unknown model {cfg.name!r}; choose from {sorted(ENCODERS)}")
    return ENCODERS[cfg.name].from_config(cfg, n_items)
