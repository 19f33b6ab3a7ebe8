"""Transformer building blocks written out in plain torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, n_queries: int | None = None) -> torch.Tensor:
        """x: (B, L, D) -> (B, Q, D), the outputs of the last Q positions (all L by default).

        With ``n_queries`` set, keys and values still cover every position but queries are
        projected for the last Q rows only; ``attn_mask`` is then (B, 1, Q, L)."""
        B, L, D = x.shape
        H, Dh = self.n_heads, D // self.n_heads
        if n_queries is None:
            q, k, v = self.qkv(x).view(B, L, 3, H, Dh).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, Dh)
        else:
            w_q, w_kv = self.qkv.weight.split([D, 2 * D])
            b_q, b_kv = self.qkv.bias.split([D, 2 * D])
            k, v = F.linear(x, w_kv, b_kv).view(B, L, 2, H, Dh).permute(2, 0, 3, 1, 4)  # 2 x (B, H, L, Dh)
            # .contiguous(): a fresh, aligned buffer keeps the GEMM's rounding independent of
            # where the slice happens to start, so serving and evaluation agree bit for bit.
            q = F.linear(x[:, L - n_queries :].contiguous(), w_q, b_q)  # (B, Q, D)
            q = q.view(B, n_queries, H, Dh).transpose(1, 2)  # (B, H, Q, Dh)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, Q, Dh)
        return self.out(y.transpose(1, 2).reshape(B, q.shape[2], D))  # (B, Q, D)


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float, mult: int = 1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, mult * dim)
        self.fc2 = nn.Linear(mult * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, n_queries: int | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), or (B, Q, D) for the last ``n_queries`` positions only
        (their values are the same as in the full output; see ``SelfAttention``)."""
        h = self.attn(self.ln1(x), attn_mask, n_queries)
        if n_queries is not None:
            x = x[:, x.shape[1] - n_queries :].contiguous()
        x = x + self.drop(h)
        return x + self.drop(self.ffn(self.ln2(x)))
