"""BSARec: a Fourier frequency rescaler beside self-attention, made causal.

Shin et al., "An Attentive Inductive Bias for Sequential Recommendation beyond the
Self-Attention", AAAI 2024; written from the paper, checked against the authors' code
(``yehjin-shin/BSARec``, ``src/model/bsarec.py`` and ``_modules.py``). The layer is post-norm,
as FMLP-Rec's, which the reference builds on:

    DSP(X)  = X_low + beta * (X - X_low)                 beta >= 0 per channel (beta = s^2, s ~ N(0, 1))
    F       = LN(X + Dropout(DSP(X)))                    frequency rescaler ("inductive bias")
    A       = LN(X + Dropout(Attn(X)))                   softmax self-attention, dropout on its weights
    H       = alpha F + (1 - alpha) A
    Y       = LN(H + Dropout(W2 GELU(W1 H)))             feed-forward, 4 x dim, no inner dropout

where X_low keeps the lowest ``c // 2 + 1`` frequencies of the rFFT of X along the sequence
(the reference spells the cut-off ``c``; ``model.bsarec_c``).

Causality. The reference's FFT runs over its whole window, so a position's X_low mixes in the
positions after it; it trains and predicts only at the window's last position: every training
prefix is its own sample, right-aligned (left-padded) in a window of N = max_len positions.
Keeping the lowest frequencies is a linear, shift-invariant map on that window, a circular
convolution with the kernel

    h = irfft(1[f < c // 2 + 1], n=N),   i.e.  h[d] = (1 + 2 sum_{0 < f <= c//2} cos(2 pi f d / N)) / N

(the rFFT and inverse with ``norm="ortho"`` compose to the unnormalised pair). At the window's
last position, N - 1, the circular wrap never happens:

    X_low[N - 1] = sum_{j=0}^{N-1} h[(N - 1 - j) mod N] x_j = sum_{d=0}^{N-1} h[d] x_{N-1-d},

a causal convolution of the sequence with h. So this block computes X_low at *every*
position t as that causal convolution over t's own history, sum_{d=0}^{min(t, N-1)} h[d] x_{t-d},
one (L, L) lower-triangular Toeplitz matrix T[t, s] = h[t - s] (built once for N = max_len,
cut to the batch's L) applied as a batched matmul. Every position's output is then the
reference's last-position output for the prefix ending there, and the library can train on
every position at once (targets: the next item everywhere) with the causal guarantees of
SASRec. tests/nn/test_bsarec.py checks the convolution against the FFT on each right-aligned
prefix.

Padding. Padding positions are zeroed before the convolution, so a position's output does not
depend on how much left padding its row has (the length-group fast path trims it). The
reference instead lets its padding positions into the FFT, carrying a (random, never trained:
its init overwrites the padding row) item embedding plus position embeddings, layer-normed;
its outputs for histories shorter than max_len differ from these by that term.

What the rest of the encoder does differently from the reference (the encoder, not the
block, ``recsys.nn.encoder.SASRecEncoder``): item embeddings are scaled by sqrt(dim) with no
LayerNorm on the input, a final LayerNorm follows the last block, and learned positions count
back from the end of the training window, not from the end of each prefix (as for SASRec).
Training every position in one pass covers the same (history, target) pairs as the
reference's one-sample-per-prefix full cross-entropy, each weighted once, so the expected loss
of an epoch is the same; a step averages over a batch of windows (B users x their positions)
rather than B prefixes, so an epoch takes fewer, larger steps.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.nn.layers import Dropout, FeedForward, SelfAttention

LN_EPS = 1e-12  # the reference's (TF-style) LayerNorm epsilon


def low_pass_kernel(window: int, c: int) -> torch.Tensor:
    """h (window,) float64: keeping the lowest ``c // 2 + 1`` rFFT frequencies of a length-
    ``window`` sequence is the circular convolution with h."""
    if c < 0:
        raise ValueError(f"c must be >= 0, got {c}")
    keep = torch.zeros(window // 2 + 1, dtype=torch.float64)
    keep[: c // 2 + 1] = 1.0
    return torch.fft.irfft(keep.to(torch.complex128), n=window)  # (N,)


def causal_toeplitz(h: torch.Tensor) -> torch.Tensor:
    """T (N, N) with T[t, s] = h[t - s] for s <= t, else 0: ``T @ x`` is the causal
    convolution of x with h."""
    n = len(h)
    lag = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # (N, N)
    return torch.where(lag >= 0, h[lag.clamp(min=0)], torch.zeros((), dtype=h.dtype))


class BSARecBlock(nn.Module):
    def __init__(
        self, dim: int, n_heads: int, dropout: float, sampler: str = "bernoulli", max_len: int = 50,
        alpha: float = 0.9, c: int = 3,
    ) -> None:
        """``alpha``: weight of the frequency rescaler beside attention; ``c``: the low band is
        the lowest ``c // 2 + 1`` frequencies of a ``max_len`` window (the reference's
        spelling). Defaults: the reference code's (``src/utils.py``)."""
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha, self.c = alpha, c
        # Not learned and rebuilt from (max_len, c): kept out of the state_dict.
        self.register_buffer("lowpass", causal_toeplitz(low_pass_kernel(max_len, c)).float(), persistent=False)
        self.sqrt_beta = nn.Parameter(torch.randn(dim))  # beta = sqrt_beta^2 >= 0, as the reference
        self.ln_filter = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = SelfAttention(dim, n_heads, dropout, sampler)
        self.ln_attn = nn.LayerNorm(dim, eps=LN_EPS)
        self.ffn = FeedForward(dim, 0.0, mult=4, sampler=sampler)  # the reference drops out after it only
        self.ln_ffn = nn.LayerNorm(dim, eps=LN_EPS)
        self.drop = Dropout(dropout, sampler)

    def low_pass(self, x: torch.Tensor, real: torch.Tensor, n_queries: int) -> torch.Tensor:
        """X_low of the last ``n_queries`` positions: the causal convolution of the real
        positions' x with h. x: (B, L, D), real: (B, L) bool -> (B, Q, D)."""
        L = x.shape[1]
        if L > self.lowpass.shape[0]:
            raise ValueError(f"sequence length {L} exceeds the block's max_len {self.lowpass.shape[0]}")
        taps = self.lowpass[L - n_queries : L, :L]  # (Q, L)
        return torch.matmul(taps, x * real.unsqueeze(-1))  # (B, Q, D)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, n_queries: int | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), or (B, Q, D) for the last ``n_queries`` positions only."""
        L = x.shape[1]
        q = L if n_queries is None else n_queries
        # The last query's row of the mask allows exactly the row's real keys (plus itself).
        real = attn_mask[:, 0, -1, :]  # (B, L)
        low = self.low_pass(x, real, q)  # (B, Q, D)
        a = self.attn(x, attn_mask, n_queries)  # (B, Q, D)
        if n_queries is not None:
            x = x[:, L - q :].contiguous()
        dsp = low + self.sqrt_beta**2 * (x - low)  # low band kept, high band rescaled by beta
        h = self.alpha * self.ln_filter(x + self.drop(dsp)) + (1 - self.alpha) * self.ln_attn(x + self.drop(a))
        return self.ln_ffn(h + self.drop(self.ffn(h)))  # (B, Q, D)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, c={self.c}, max_len={self.lowpass.shape[0]}"
