"""SASRec's block (Kang & McAuley, ICDM 2018), pre-norm as in the SASRec reference code and
nanoGPT: x + Attn(LN(x)), then x + FFN(LN(x)). BERT4Rec uses it too, bidirectionally."""

from __future__ import annotations

import torch
from torch import nn

from recsys.nn.layers import Dropout, FeedForward, SelfAttention


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + FFN(LN(x)).

    ``max_len`` is part of the block interface (``recsys.nn.blocks``) and unused here: the
    encoder adds the positions."""

    def __init__(self, dim: int, n_heads: int, dropout: float, sampler: str = "bernoulli", max_len: int = 50) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout, sampler)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, dropout, sampler=sampler)
        self.drop = Dropout(dropout, sampler)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, n_queries: int | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), or (B, Q, D) for the last ``n_queries`` positions only
        (their values are the same as in the full output; see ``SelfAttention``)."""
        h = self.attn(self.ln1(x), attn_mask, n_queries)
        if n_queries is not None:
            x = x[:, x.shape[1] - n_queries :].contiguous()
        x = x + self.drop(h)
        return x + self.drop(self.ffn(self.ln2(x)))
