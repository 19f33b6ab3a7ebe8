"""LiGR: the gated pre-norm transformer layer that eSASRec uses.

Borisyuk et al., "From Features to Transformers: Redefining Ranking for Scalable Impact"
(LinkedIn, KDD 2025) introduce the layer; Tikhonov et al., "eSASRec: Enhancing
Transformer-based Recommendations in a Modular Fashion", RecSys 2025, put it into SASRec.
Written from eSASRec's own implementation (RecTools, ``rectools/models/nn/transformers/ligr.py``,
the ``LiGRLayers`` its configs in ``blondered/transformer_benchmark`` name):

    X = X + sigmoid(G1 X) * Dropout(Attn(LN(X)))             gated residual around attention
    X = X + sigmoid(G2 X) * Dropout(SwiGLU(LN(X)))           gated residual around the FFN
    SwiGLU(h) = W2 Dropout(SiLU(W1 h) * W3 h)                no biases, hidden ffn_mult x dim

The gates read the residual stream itself, not its normalised copy; they let a layer pass
its input through unchanged (gate 0) per feature, which plain residuals cannot. Attention is
the house's softmax self-attention (``recsys.nn.layers.SelfAttention``), with dropout on its
weights as in ``nn.MultiheadAttention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys.nn.layers import Dropout, SelfAttention

#: Hidden width of the SwiGLU feed-forward, in multiples of ``dim`` (``model.ligr_ffn_mult``):
#: RecTools' default, and eSASRec's setting for S3-Rec Beauty and ML-1M (Toys 1, Sports 2).
FFN_MULT = 4


class SwiGLU(nn.Module):
    """Shazeer, "GLU Variants Improve Transformer", 2020: W2 (SiLU(W1 x) * W3 x)."""

    def __init__(self, dim: int, hidden: int, dropout: float, sampler: str = "bernoulli") -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.drop = Dropout(dropout, sampler)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.drop(F.silu(self.w1(x)) * self.w3(x)))


class LiGRBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float, sampler: str = "bernoulli", max_len: int = 200,
                 ffn_mult: int = FFN_MULT) -> None:
        """``max_len`` is unused (the interface's); ``ffn_mult``: the SwiGLU's hidden width / dim."""
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout, sampler)
        self.gate1 = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = SwiGLU(dim, ffn_mult * dim, dropout, sampler)
        self.gate2 = nn.Linear(dim, dim)
        self.drop = Dropout(dropout, sampler)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, n_queries: int | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), or (B, Q, D) for the last ``n_queries`` positions only
        (the same values as the full output's last rows; see ``SelfAttention``)."""
        h = self.attn(self.ln1(x), attn_mask, n_queries)  # (B, Q, D)
        if n_queries is not None:
            x = x[:, x.shape[1] - n_queries :].contiguous()
        x = x + torch.sigmoid(self.gate1(x)) * self.drop(h)
        return x + torch.sigmoid(self.gate2(x)) * self.drop(self.ffn(self.ln2(x)))
