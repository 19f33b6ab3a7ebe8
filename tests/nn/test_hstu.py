"""HSTU block (``recsys.nn.blocks.hstu``), and for HSTU and LiGR alike: the block-level
guarantees (causality, the one-query path, left-padding invariance with any padding
contents), the target never read by its own state over random collated batches, and a
pattern only attention can learn. tests/nn/test_blocks.py holds every registered block to
the same guarantees through the encoder."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.collate import collate_train
from recsys.data.sequences import Sequences
from recsys.data.splits import leave_one_out
from recsys.nn.blocks.hstu import HSTUBlock
from recsys.nn.blocks.ligr import LiGRBlock
from recsys.nn.encoder import SASRecEncoder
from recsys.types import PAD_ID

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


def _encoder(name):
    torch.manual_seed(0)
    return SASRecEncoder(20, dim=D, n_blocks=2, n_heads=2, max_len=L, dropout=0.0, block=name).eval()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(1, 20), min_size=3, max_size=14), min_size=1, max_size=6),
       st.sampled_from(sorted(BLOCKS)))
def test_no_state_reads_its_own_target(histories, name):
    """Over collated training batches (left-padded, targets shifted by one): replacing every
    input after position j, the target of j among them, leaves the states at 0..j as they were."""
    offsets = np.cumsum([0] + [len(h) for h in histories])
    items = np.concatenate(histories).astype(np.int64)
    seqs = Sequences(np.array([str(u) for u in range(len(histories))], dtype=object), offsets, items,
                     np.arange(len(items), dtype=np.int64))
    batch = collate_train(items, leave_one_out(seqs).train, np.arange(len(histories)), L)
    x, targets = batch["inputs"], batch["targets"]
    enc = _encoder(name)
    base = enc(x)
    for j in range(x.shape[1]):
        later = x.clone()
        later[:, j + 1 :] = torch.where(x[:, j + 1 :] == PAD_ID, PAD_ID, 1 + x[:, j + 1 :] % 20)
        has_target = targets[:, j] != PAD_ID
        torch.testing.assert_close(enc(later)[has_target, : j + 1], base[has_target, : j + 1], atol=1e-6, rtol=0)


def _interleaved_cycles():
    """Two interleaved cycles, a_k over items 1..6 and b_k over 7..12, a_{k+1} = a_k + 1 (mod 6),
    from every pair of starts: the next item is a function of the item two back, and of
    nothing nearer (after a_k comes b_k, which any b_0 could have led to)."""
    rows = [[v for k in range(6) for v in (1 + (a + k) % 6, 7 + (b + k) % 6)] for a in range(6) for b in range(6)]
    seq = torch.tensor(rows)[:, :12]  # (36, 12)
    return seq[:, :-1], seq[:, 1:]  # inputs, targets (36, 11)


@pytest.mark.parametrize("name", BLOCKS)
def test_encoder_learns_a_pattern_only_attention_can_see(name):
    """Every target from position 1 on is right after 150 full-batch steps. A block that
    passed its input through, or attended only to its own position, stays at chance (1/6:
    measured, with the same steps)."""
    x, t = _interleaved_cycles()
    torch.manual_seed(0)
    enc = SASRecEncoder(12, dim=32, n_blocks=1, n_heads=1, max_len=11, dropout=0.0, block=name)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    for _ in range(150):
        logits = enc(x)[:, 1:] @ enc.item_weights().T  # (36, 10, 12): position 0's b_0 is a coin toss
        loss = F.cross_entropy(logits.reshape(-1, 12), t[:, 1:].reshape(-1) - 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        predicted = (enc.eval()(x)[:, 1:] @ enc.item_weights().T).argmax(-1) + 1
    assert torch.equal(predicted, t[:, 1:])
