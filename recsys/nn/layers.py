"""Transformer building blocks written out in plain torch."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Where dropout's keep/drop draws come from (``model.dropout_sampler``):
# - "bernoulli": torch's own dropout (``bernoulli_``), as every run before this option;
# - "uniform": keep an element where a uniform 16-bit integer falls below ``(1 - p) 2^16``
#   (rounded: the keep rate is exact to 2^-16). On CPU the integers come from numpy's PCG64,
#   seeded by one draw from torch's generator per call, so ``torch.manual_seed`` still fixes
#   every mask; that is about 4x faster than ``torch.rand`` (one Mersenne-Twister float per
#   element, on one thread) and 6x faster than ``bernoulli_``. On other devices
#   ``torch.rand < 1 - p`` is used. Other draws than "bernoulli", so other trajectories.
DROPOUT_SAMPLERS = ("bernoulli", "uniform")

_U16 = 1 << 16


def keep_mask(shape: torch.Size, keep: float, device: torch.device) -> torch.Tensor:
    """Bool tensor of ``shape``, each element True with probability ``keep`` (to 2^-16),
    independently: the "uniform" sampler's draw."""
    if device.type != "cpu":
        return torch.rand(shape, device=device) < keep
    threshold = round(keep * _U16)  # keep where u < threshold, u uniform on 0 .. 2^16 - 1
    if threshold >= _U16:
        return torch.ones(shape, dtype=torch.bool)
    seed = int(torch.randint(0, 2**62, ()))  # from torch's generator: manual_seed fixes the mask
    u = np.random.default_rng(seed).integers(0, _U16, size=math.prod(shape), dtype=np.uint16)
    # torch compares no uint16, so shift to int16: u - 2^15 < threshold - 2^15, same set
    return torch.from_numpy(u.view(np.int16)).view(shape) < threshold - _U16 // 2


def dropout(x: torch.Tensor, p: float, training: bool, sampler: str = "bernoulli") -> torch.Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    if sampler == "bernoulli":
        return F.dropout(x, p, True)
    keep = 1.0 - p
    # the multiplier 1 / keep or 0, from the mask in one cast and one in-place scaling:
    # cheaper than torch.where(mask, scale, 0), and the same values
    return x * keep_mask(x.shape, keep, x.device).to(x.dtype).mul_(1.0 / keep)


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
    ``explicit``, the steps are written out: the same ones torch's math kernel takes, which
    is the kernel it runs on CPU when dropout is on. ``attn_mask``: True where allowed."""
    if not explicit and (p == 0.0 or sampler == "bernoulli"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
    scores = (q @ k.transpose(-2, -1)).mul_(1.0 / math.sqrt(q.shape[-1]))  # (B, H, Q, L)
    weights = scores.masked_fill_(~attn_mask, float("-inf")).softmax(dim=-1)
    return dropout(weights, p, True, sampler) @ v


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


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, n_heads: int, dropout: float, sampler: str = "bernoulli") -> None:
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
