"""Transformer building blocks written out in plain torch."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Where dropout's keep/drop draws come from (``model.dropout_sampler``):
# - "bernoulli": torch's own dropout (``bernoulli_``), as every run before this option;
# - "uniform": keep an element for ``(1 - p) 2^16`` of the 2^16 values of a uniform 16-bit
#   integer (rounded: the keep rate is exact to 2^-16). On CPU the integers come from numpy's PCG64,
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
    return torch.from_numpy(_uniform_keep(math.prod(shape), threshold)).view(shape)


def _uniform_keep(n: int, threshold: int) -> np.ndarray:
    """``n`` independent keep decisions (bool), each True with probability ``threshold / 2^16``.

    The integers ``u`` are numpy PCG64's stream, seeded by one draw from torch's generator
    (so ``torch.manual_seed`` fixes them), each 64-bit output split into four 16-bit lanes,
    lowest first: the values ``Generator.integers(0, 2^16, n, uint16)`` returns, taken
    straight from ``random_raw`` at less than half its cost. Each is read as a *signed*
    16-bit value ``s`` (``u`` below 2^15 as itself, the rest as ``u - 2^16``) and kept where
    ``s < threshold - 2^15``: ``threshold`` of the 2^16 equally likely values (``u`` below
    ``threshold - 2^15``, and every ``u`` from 2^15 up), so the rate is exact; the set
    every "uniform" run has used."""
    seed = int(torch.randint(0, 2**62, ()))
    words = np.random.default_rng(seed).bit_generator.random_raw(-(-n // 4))  # (ceil(n / 4),) uint64
    s = words.astype("<u8", copy=False).view("<i2")[:n]  # little-endian lanes, lowest first
    return s < np.int16(threshold - _U16 // 2)


# the integer types (numpy, torch) as wide as each float dtype whose multiplier numpy builds
_BITS = {torch.float32: (np.int32, torch.int32), torch.bfloat16: (np.int16, torch.int16),
         torch.float16: (np.int16, torch.int16)}


def keep_multiplier(shape: torch.Size, keep: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The "uniform" sampler's dropout multiplier: ``1 / keep`` (rounded to ``dtype``) where
    ``keep_mask`` keeps, else 0; the same mask from the same draws, the same values as
    ``keep_mask(...).to(dtype).mul_(1 / keep)``.

    On CPU, for fp32 / bf16 / fp16, numpy compares the integers and writes each element's
    bit pattern (the scale's or zero's) in two passes over 2- or 4-byte elements, about 10x
    cheaper than torch's comparison, bool-to-float cast and scaling (its int16 comparison
    and bool cast are slow, on 2 threads)."""
    bits = _BITS.get(dtype)
    threshold = round(keep * _U16)
    if device.type != "cpu" or bits is None or threshold >= _U16:
        return keep_mask(shape, keep, device).to(dtype).mul_(1.0 / keep)
    pattern = _scale_bits(keep, dtype)
    kept = _uniform_keep(math.prod(shape), threshold)
    m = np.multiply(kept, pattern, dtype=bits[0])  # the pattern where kept, else 0 (+0.0's bits)
    return torch.from_numpy(m).view(dtype).view(shape)


@functools.lru_cache(maxsize=64)
def _scale_bits(keep: float, dtype: torch.dtype) -> np.integer:
    """The bits of ``1 / keep`` rounded to ``dtype`` as torch's ``mul_`` rounds it, as the
    numpy integer of ``_BITS[dtype]`` (a positive float's bits: a positive integer)."""
    np_int, torch_int = _BITS[dtype]
    return np_int(torch.ones((), dtype=dtype).mul_(1.0 / keep).view(torch_int).item())


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
    ``explicit``, the steps are written out: the same ones torch's math kernel takes, which
    is the kernel it runs on CPU when dropout is on. ``attn_mask``: True where allowed."""
    if not explicit and (p == 0.0 or sampler == "bernoulli"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
    B, H, Q, Dh = q.shape
    L = k.shape[2]
    # The mask as an additive bias (0 where allowed, -inf elsewhere) that the scores' product
    # adds as it scales: one batched product, where scaling and masking were two more passes
    # over the (B, H, Q, L) scores in forward and two in backward. With a power-of-two
    # scale (Dh = 4, 16, 64, ...) the scores are the same bits as scaling after the product.
    zero = torch.zeros((), dtype=q.dtype, device=q.device)
    bias = torch.where(attn_mask, zero, torch.full_like(zero, float("-inf"))).expand(B, H, Q, L)
    scores = torch.baddbmm(bias.reshape(B * H, Q, L), q.reshape(B * H, Q, Dh),
                           k.reshape(B * H, L, Dh).transpose(1, 2), alpha=1.0 / math.sqrt(Dh))
    weights = scores.softmax(dim=-1).view(B, H, Q, L)
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
