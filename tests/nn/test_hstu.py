"""HSTU block (``recsys.nn.blocks.hstu``), and the guarantees every block of issue 21 owes
(causality, the one-query path, left-padding invariance), held here for HSTU and LiGR alike."""

import pytest
import torch
import torch.nn.functional as F

from recsys.nn.blocks.hstu import HSTUBlock
from recsys.nn.blocks.ligr import LiGRBlock

BLOCKS = {"hstu": HSTUBlock, "ligr": LiGRBlock}
D, L = 16, 8


def _block(name, **kw):
    torch.manual_seed(0)
    return BLOCKS[name](D, 2, 0.0, max_len=L, **kw).eval()


def _mask(real, causal=True):
    """(B, 1, L, L) as the encoder builds it: real keys, causal, diagonal always allowed."""
    n = real.shape[1]
    keep = real[:, None, None, :] & (torch.ones(n, n, dtype=torch.bool).tril() if causal else True)
    return keep | torch.eye(n, dtype=torch.bool)


def _batch(lengths=(8, 1, 5, 3)):
    torch.manual_seed(1)
    real = torch.arange(L)[None, :] >= L - torch.tensor(lengths)[:, None]  # (B, L) left-padded
    return torch.randn(len(lengths), L, D), real


@pytest.mark.parametrize("name", BLOCKS)
def test_changing_a_later_position_leaves_earlier_outputs_unchanged(name):
    block = _block(name)
    x, real = _batch()
    y = x.clone()
    y[:, 5] += 1.0
    hx, hy = block(x, _mask(real)), block(y, _mask(real))
    assert torch.equal(hx[:, :5], hy[:, :5])
    assert not torch.allclose(hx[:, 5:], hy[:, 5:], atol=1e-3)


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("causal", [True, False])
def test_one_query_equals_the_full_outputs_last_row(name, causal):
    block = _block(name)
    x, real = _batch()
    mask = _mask(real, causal)
    full = block(x, mask)
    one = block(x, mask[:, :, -1:], n_queries=1)
    assert one.shape == (4, 1, D)
    torch.testing.assert_close(one, full[:, -1:], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", BLOCKS)
def test_real_outputs_do_not_depend_on_extra_left_padding(name):
    """A row of 5 real positions, alone (L = 5) and under 3 more padding columns holding
    arbitrary values (what earlier blocks leave there): the same outputs at the real ones."""
    block = _block(name)
    x, real = _batch((5,))
    padded = block(x, _mask(real))[:, 3:]
    trimmed = block(x[:, 3:], _mask(real[:, 3:]))
    torch.testing.assert_close(trimmed, padded, atol=1e-6, rtol=1e-5)
    x[:, :3] = 100.0  # other padding contents change nothing either
    torch.testing.assert_close(block(x, _mask(real))[:, 3:], padded, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", BLOCKS)
def test_every_dropout_uses_the_sampler(name):
    block = BLOCKS[name](D, 2, 0.1, sampler="uniform")
    assert {m.sampler for m in block.modules() if hasattr(m, "sampler")} == {"uniform"}


def test_hstu_weights_are_pointwise_silu_over_max_len_with_a_distance_bias():
    """The layer written out once, by hand, for one row and one head."""
    block = HSTUBlock(4, 1, 0.0, max_len=6).eval()
    with torch.no_grad():
        block.rel_pos.copy_(torch.linspace(-1.0, 1.0, 11))
    x = torch.randn(1, 3, 4)
    mask = _mask(torch.tensor([[False, True, True]]))
    u, v, q, k = F.silu(block.uvqk(F.layer_norm(x, (4,)))).split(4, dim=-1)
    w = torch.zeros(3, 3)
    for i in range(3):
        for j in range(3):
            if mask[0, 0, i, j]:
                w[i, j] = F.silu(q[0, i] @ k[0, j] + block.rel_pos[j - i + 5]) / 6
    expected = x + block.out(F.layer_norm(w @ v[0], (4,)) * u)
    torch.testing.assert_close(block(x, mask), expected, atol=1e-6, rtol=1e-5)


def test_hstu_relative_bias_is_one_scalar_per_distance():
    block = HSTUBlock(4, 1, 0.0, max_len=6)
    bias = block.relative_bias(4, 4)
    assert bias.shape == (4, 4)
    assert torch.equal(bias[3, 1], block.rel_pos[1 - 3 + 5])  # key 1 of query 3: distance -2
    assert torch.equal(torch.diagonal(bias), block.rel_pos[5].expand(4))  # distance 0
    assert torch.equal(block.relative_bias(1, 4), bias[-1:])  # the last query's row
    block.rel_pos.sum().backward()  # learned
    assert block.rel_pos.grad is not None
