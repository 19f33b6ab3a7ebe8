"""BSARec's block against the reference's formulation: an FFT low-pass over a right-aligned
window of max_len positions, read at the window's last position (recsys.nn.blocks.bsarec)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recsys.nn.blocks.bsarec import BSARecBlock, causal_toeplitz, low_pass_kernel


def fft_low_pass(window: torch.Tensor, c: int) -> torch.Tensor:
    """The reference's FrequencyLayer low band: rfft (ortho), zero bins >= c // 2 + 1, irfft."""
    spec = torch.fft.rfft(window, dim=1, norm="ortho")
    spec[:, c // 2 + 1 :, :] = 0
    return torch.fft.irfft(spec, n=window.shape[1], dim=1, norm="ortho")


def right_aligned(x: torch.Tensor, t: int, n: int) -> torch.Tensor:
    """The prefix x[:, : t + 1] as the reference feeds it: its last n positions, left-padded
    with zeros to n. (B, L, D) -> (B, n, D)."""
    prefix = x[:, max(0, t + 1 - n) : t + 1]
    return F.pad(prefix, (0, 0, n - prefix.shape[1], 0))


@pytest.mark.parametrize("n, c", [(8, 3), (8, 5), (50, 5), (50, 3), (7, 4), (9, 0)])
def test_kernel_is_the_closed_form(n, c):
    h = low_pass_kernel(n, c)
    d = torch.arange(n, dtype=torch.float64)
    expected = (1 + 2 * sum((torch.cos(2 * math.pi * f * d / n) for f in range(1, c // 2 + 1)), torch.zeros(n, dtype=torch.float64))) / n
    torch.testing.assert_close(h, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n, c", [(8, 3), (8, 5), (12, 7), (50, 5)])
def test_causal_convolution_equals_the_fft_low_pass_at_each_prefix_end(n, c):
    torch.manual_seed(0)
    L = min(n, 10)
    x = torch.randn(3, L, 4, dtype=torch.float64)
    conv = causal_toeplitz(low_pass_kernel(n, c))[:L, :L] @ x  # (B, L, D)
    for t in range(L):
        ref = fft_low_pass(right_aligned(x, t, n), c)[:, -1]  # (B, D)
        torch.testing.assert_close(conv[:, t], ref, atol=1e-12, rtol=0)
    # the FFT over the whole sequence is not causal: it differs before the last position
    assert not torch.allclose(fft_low_pass(x, c)[:, 0], conv[:, 0], atol=1e-3)


def reference_block(block: BSARecBlock, x: torch.Tensor, real: torch.Tensor, n: int, c: int) -> torch.Tensor:
    """The reference's BSARecLayer + FeedForward, written with torch.fft and an additive mask,
    run on each prefix right-aligned in a window of n (padding zeroed), read at the last
    position. Uses the block's weights. (B, L, D) -> (B, L, D)."""
    B, L, D = x.shape
    H = block.attn.n_heads
    w_q, w_k, w_v = block.attn.qkv.weight.split(D)
    b_q, b_k, b_v = block.attn.qkv.bias.split(D)
    beta = block.sqrt_beta**2
    ln = lambda m, z: F.layer_norm(z, (D,), m.weight, m.bias, m.eps)  # noqa: E731
    out = torch.empty_like(x)
    for t in range(L):
        win = right_aligned(x * real[..., None], t, n)  # (B, n, D)
        keep = right_aligned(real[..., None].to(x.dtype), t, n)[..., 0] > 0  # (B, n)
        low = fft_low_pass(win, c)
        filt = ln(block.ln_filter, win + low + beta * (win - low))
        q = F.linear(win, w_q, b_q).view(B, n, H, D // H).transpose(1, 2)
        k = F.linear(win, w_k, b_k).view(B, n, H, D // H).transpose(1, 2)
        v = F.linear(win, w_v, b_v).view(B, n, H, D // H).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // H)  # (B, H, n, n)
        allowed = keep[:, None, None, :] & torch.ones(n, n, dtype=torch.bool).tril()
        allowed = allowed | torch.eye(n, dtype=torch.bool)
        ctx = (scores.masked_fill(~allowed, -1e4).softmax(-1) @ v).transpose(1, 2).reshape(B, n, D)
        att = ln(block.ln_attn, win + block.attn.out(ctx))
        h = block.alpha * filt + (1 - block.alpha) * att
        y = ln(block.ln_ffn, h + block.ffn.fc2(F.gelu(block.ffn.fc1(h))))
        out[:, t] = y[:, -1]
    return out


@pytest.mark.parametrize("c, alpha", [(3, 0.9), (5, 0.7), (1, 0.3)])
def test_block_equals_the_reference_layer_on_each_right_aligned_prefix(c, alpha):
    torch.manual_seed(1)
    n, D = 12, 16
    block = BSARecBlock(D, 2, 0.0, max_len=n, alpha=alpha, c=c).double().eval()
    block.lowpass = causal_toeplitz(low_pass_kernel(n, c))  # float64 taps, not float32 ones cast up
    x = torch.randn(3, 9, D, dtype=torch.float64)
    real = torch.ones(3, 9, dtype=torch.bool)
    real[1, :4] = False  # a short history: left padding
    real[2, :8] = False  # one item
    mask = real[:, None, None, :] & torch.ones(9, 9, dtype=torch.bool).tril()
    mask = mask | torch.eye(9, dtype=torch.bool)
    with torch.no_grad():
        ours = block(x, mask)
        ref = reference_block(block, x, real, n, c)
    torch.testing.assert_close(ours[real], ref[real], atol=1e-9, rtol=0)


def test_alpha_one_is_the_filter_alone_and_beta_one_passes_the_input_through():
    """alpha = 1: attention has no say; with beta = 1 the rescaler is the identity, so the
    layer is LN(2x) then the feed-forward, whatever c is."""
    torch.manual_seed(2)
    block = BSARecBlock(8, 1, 0.0, max_len=6, alpha=1.0, c=1).eval()
    with torch.no_grad():
        block.sqrt_beta.fill_(1.0)
    x = torch.randn(2, 6, 8)
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    with torch.no_grad():
        h = block.ln_filter(2 * x)
        expected = block.ln_ffn(h + block.ffn(h))
        torch.testing.assert_close(block(x, mask), expected, atol=1e-5, rtol=1e-5)


def test_state_dict_has_no_kernel_and_rejects_longer_sequences():
    block = BSARecBlock(8, 1, 0.0, max_len=6)
    assert "lowpass" not in block.state_dict() and "sqrt_beta" in block.state_dict()
    with pytest.raises(ValueError, match="max_len"):
        block(torch.randn(1, 7, 8), torch.ones(1, 1, 7, 7, dtype=torch.bool))
