"""Transformer parts written out in plain torch: dropout, attention, feed-forward.

The blocks built from them, one per ``model.name``, live in ``recsys.nn.blocks`` (SASRec's
pre-norm block is ``recsys.nn.blocks.sasrec.Block``).

The uniform dropout sampler and the written-out attention it needs are kernels of their
own (``recsys.nn.kernels.dropout``, ``recsys.nn.kernels.attention``); ``dropout`` and
``attend`` here say what they compute and when they are used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys.nn.kernels.attention import written_out_attention
from recsys.nn.kernels.dropout import keep_mask, keep_multiplier  # noqa: F401 (keep_mask: importable here too)

# Where dropout's keep/drop draws come from (``model.dropout_sampler``):
# - "bernoulli": torch's own dropout (``bernoulli_``), as every run before this option;
# - "uniform": a 16-bit uniform integer per element, compared with a threshold
#   (``recsys.nn.kernels.dropout``); other draws, so other trajectories for one seed.
DROPOUT_SAMPLERS = ("bernoulli", "uniform")


def dropout(x: torch.Tensor, p: float, training: bool, sampler: str = "bernoulli") -> torch.Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    if sampler == "bernoulli":
        return F.dropout(x, p, True)
    return x * keep_multiplier(x.shape, 1.0 - p, x.dtype, x.device)


class Dropout(nn.Module):
    """``nn.Dropout`` with a choice of ``DROPOUT_SAMPLERS``; no parameters, so swapping it for
    ``nn.Dropout`` leaves a state_dict unchanged."""

    def __init__(self, p: float, sampler: str = "bernoulli") -> None:
        super().__init__()
        if sampler not in DROPOUT_SAMPLERS:
            raise ValueError(f"dropout sampler must be one of {DROPOUT_SAMPLERS}, got {sampler!r}")
        self.p, self.sampler = p, sampler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.sampler)

    def extra_repr(self) -> str:
        return f"p={self.p}, sampler={self.sampler}"


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor, p: float,
           sampler: str = "bernoulli", explicit: bool = False) -> torch.Tensor:
    """Scaled dot-product attention with dropout ``p`` on the weights: (B, H, Q, Dh).

    torch's fused kernel draws its own (Bernoulli) dropout, so with another sampler, or with
    ``explicit``, the steps are written out (``written_out_attention``). ``attn_mask``: True
    where allowed."""
    if not explicit and (p == 0.0 or sampler == "bernoulli"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
    return written_out_attention(q, k, v, attn_mask, lambda weights: dropout(weights, p, True, sampler))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float, sampler: str = "bernoulli") -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout, self.sampler = dropout, sampler

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
        y = attend(q, k, v, attn_mask, self.dropout if self.training else 0.0, self.sampler)  # (B, H, Q, Dh)
        return self.out(y.transpose(1, 2).reshape(B, q.shape[2], D))  # (B, Q, D)


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float, mult: int = 1, sampler: str = "bernoulli") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, mult * dim)
        self.fc2 = nn.Linear(mult * dim, dim)
        self.drop = Dropout(dropout, sampler)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))
