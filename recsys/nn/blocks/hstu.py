"""HSTU: the Hierarchical Sequential Transduction Unit.

Zhai et al., "Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers
for Generative Recommendations", ICML 2024, Eqs. (1)-(3); the details below follow the
authors' code for the paper's public experiments (``facebookresearch/generative-recommenders``,
``generative_recommenders/modeling/sequential/hstu.py``):

    U, V, Q, K = split(SiLU(f1(LN(X))))                      pointwise projection, no bias
    A = SiLU(Q K^T + rab) / max_len, masked                   pointwise attention, no softmax
    Y = X + f2(Dropout(LN(A V) * U))                          gated, one residual, no FFN

- No softmax: each weight is SiLU of its score on its own, so the weights of a row need not
  sum to 1 and the number of items attended to stays visible to the next layer. They are
  divided by a constant, the maximum length (the reference divides by the padded length,
  ``/ n``), not by a row's own length: a constant keeps a row's outputs independent of how
  much left padding it has, and it is what the published numbers were trained with.
- Masked weights are multiplied by 0 (a softmax would take -inf); a padding query sees only
  itself (the diagonal), so its output is defined and ignored.
- ``rab``: a learned relative position bias, one scalar per signed distance j - i, shared by
  the heads, initialised N(0, 0.02) as in the reference (``RelativePositionalBias``: a table
  of 2 max_len - 1 entries, one per distance; the reference buckets time, not position).
  Distances do not change with left padding.
- Both layer norms have no affine parameters, as in the reference (``F.layer_norm``).

Not (yet) here:
- the relative *time* bias (the reference's ``RelativeBucketedTimeAndPositionBasedBias``,
  ``log(|t_j - t_i|) / 0.301`` in 128 buckets): batches carry no timestamps
  (``recsys.types.Batch``), so it is not wired; it needs a per-position time track first.
- the reference's Xavier-uniform init of f2 (the encoder initialises every Linear
  trunc-normal(0.02)).
- attention-weight dropout: the reference's rel-bias path has none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys.nn.layers import Dropout


class HSTUBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float, sampler: str = "bernoulli", max_len: int = 200) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.dim, self.n_heads, self.max_len = dim, n_heads, max_len
        self.uvqk = nn.Linear(dim, 4 * dim, bias=False)  # f1: U, V, Q, K of H heads each
        self.out = nn.Linear(dim, dim)  # f2
        self.drop = Dropout(dropout, sampler)
        # rab[d + max_len - 1]: bias of a key d = j - i positions from its query
        self.rel_pos = nn.Parameter(torch.empty(2 * max_len - 1).normal_(mean=0.0, std=0.02))

    def relative_bias(self, n_queries: int, length: int) -> torch.Tensor:
        """(Q, L): the bias of key j for the last Q of L query positions."""
        i = torch.arange(length - n_queries, length, device=self.rel_pos.device)  # (Q,)
        j = torch.arange(length, device=self.rel_pos.device)  # (L,)
        return self.rel_pos[j[None, :] - i[:, None] + self.max_len - 1]  # (Q, L)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, n_queries: int | None = None) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, D), or (B, Q, D) for the last ``n_queries`` rows (the same
        values as the full output's last rows); ``attn_mask``: (B, 1, Q, L), True = allowed."""
        B, L, D = x.shape
        H, Dh = self.n_heads, D // self.n_heads
        Q = L if n_queries is None else n_queries
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds max_len {self.max_len}")
        u, v, q, k = F.silu(self.uvqk(F.layer_norm(x, (D,)))).split(D, dim=-1)  # 4 x (B, L, D)
        u, q = u[:, L - Q :], q[:, L - Q :]  # (B, Q, D): only the rows asked for
        q = q.reshape(B, Q, H, Dh).transpose(1, 2)  # (B, H, Q, Dh)
        k = k.reshape(B, L, H, Dh).transpose(1, 2)  # (B, H, L, Dh)
        v = v.reshape(B, L, H, Dh).transpose(1, 2)  # (B, H, L, Dh)
        scores = q @ k.transpose(-1, -2) + self.relative_bias(Q, L)  # (B, H, Q, L)
        # pointwise weights over a constant length, zero where not allowed
        weights = F.silu(scores) / self.max_len * attn_mask.to(scores.dtype)  # (B, H, Q, L)
        a = (weights @ v).transpose(1, 2).reshape(B, Q, D)  # (B, Q, D)
        y = self.out(self.drop(F.layer_norm(a, (D,)) * u))  # (B, Q, D)
        return x[:, L - Q :] + y
