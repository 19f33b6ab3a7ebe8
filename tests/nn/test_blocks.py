"""The guarantees every encoder block gives (recsys.nn.blocks), for each registered name.

SASRec's own tests (tests/nn/test_encoder.py) cover the encoder around the blocks; here the
same encoder is built with every block of the registry, causal, and checked for causality,
independence of left padding, the serving shortcut and the length-group fast path.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from recsys.config import ENCODERS, ModelConfig
from recsys.nn.blocks import BLOCKS, options_from_config
from recsys.nn.encoder import SASRecEncoder, build_encoder
from test_encoder import _ragged_batch  # left-padded rows of lengths 8, 1, 5, 0, 3, 7, 2

NAMES = sorted(BLOCKS)


def _encoder(block: str, n_blocks: int = 2, **kw) -> SASRecEncoder:
    torch.manual_seed(0)
    enc = SASRecEncoder(n_items=20, dim=16, n_blocks=n_blocks, n_heads=2, max_len=8, dropout=0.0, block=block, **kw)
    with torch.no_grad():  # as if trained: the zero biases and unit norms of the init hide leaks through padding
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return enc.eval()


def test_every_causal_model_names_a_block_and_every_block_has_a_model():
    assert set(ENCODERS["sasrec"].__dataclass_fields__) >= {"causal", "objective", "block"}
    for name in ("bsarec", "hstu", "ligr"):
        spec = ENCODERS[name]
        assert spec.causal and spec.objective == "next" and spec.block == name
    assert {spec.block for spec in ENCODERS.values()} >= set(BLOCKS)


@pytest.mark.parametrize("block", NAMES)
def test_block_interface_and_config_defaults_equal_constructor_defaults(block):
    params = inspect.signature(BLOCKS[block]).parameters
    assert list(params)[:5] == ["dim", "n_heads", "dropout", "sampler", "max_len"]
    options = options_from_config(ModelConfig(), block)
    for option, value in options.items():
        assert params[option].default == value, f"model.{block}_{option}"
    # every keyword beyond the interface is a config field, so a config can set it
    assert set(list(params)[5:]) == set(options)


@pytest.mark.parametrize("block", NAMES)
def test_changing_a_later_position_leaves_earlier_outputs_unchanged(block):
    enc = _encoder(block)
    x = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    y = x.clone()
    y[0, 5] = 19
    hx, hy = enc(x), enc(y)
    torch.testing.assert_close(hx[:, :5], hy[:, :5], atol=1e-6, rtol=0)
    assert not torch.allclose(hx[:, 5:], hy[:, 5:], atol=1e-3)


@pytest.mark.parametrize("block", NAMES)
def test_left_padding_does_not_change_outputs(block):
    """A row padded further (a longer batch-mate) keeps its outputs at every real position."""
    enc = _encoder(block)
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]])
    torch.testing.assert_close(enc(padded)[:, -3:], enc(short), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("block", NAMES)
def test_the_target_is_never_in_its_own_input(block):
    """The state that predicts position t + 1 (output t) cannot read the item at t + 1: the
    states at 0..t stay put whatever that item is, for every t, and it is read after t."""
    enc = _encoder(block)
    torch.manual_seed(2)
    x = torch.randint(1, 21, (1, 8))
    base = enc(x)
    for t in range(7):
        changed = x.clone()
        changed[0, t + 1] = 1 + x[0, t + 1] % 20
        out = enc(changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, t + 1], base[:, t + 1], atol=1e-4)


@pytest.mark.parametrize("block", NAMES)
@pytest.mark.parametrize("n_blocks", [1, 3])
def test_last_state_equals_the_full_forward_at_the_newest_position(block, n_blocks):
    enc = _encoder(block, n_blocks=n_blocks, n_events=3)
    x = _ragged_batch()
    events = torch.where(x > 0, x % 3 + 1, torch.zeros_like(x))
    real = x[:, -1] != 0
    full = enc(x, events)[:, -1]
    fast = enc.last_state(x, events)
    assert fast.shape == (7, 16)
    torch.testing.assert_close(fast[real], full[real], atol=1e-6, rtol=1e-5)
    changed = x.clone()
    changed[0, 0] = 1 + changed[0, 0] % 20  # the oldest item of the full row
    assert not torch.allclose(enc.last_state(changed, events)[0], fast[0], atol=1e-4)


@pytest.mark.parametrize("block", NAMES)
@pytest.mark.parametrize("groups", [2, 7])
def test_length_groups_give_the_same_outputs_at_real_positions(block, groups):
    enc = _encoder(block)
    x = _ragged_batch()
    whole, grouped = enc(x), enc(x, length_groups=groups)
    real = x != 0
    torch.testing.assert_close(grouped[real], whole[real], atol=1e-6, rtol=1e-5)
    positions = real.clone()
    positions[0, :3] = False
    torch.testing.assert_close(enc(x, length_groups=groups, positions=positions), whole[positions],
                               atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n, s in ENCODERS.items() if s.block in BLOCKS and s.causal])
def test_build_encoder_uses_the_models_block_and_its_options(name):
    cfg = ModelConfig(name=name, dim=16, n_blocks=1, n_heads=2, max_len=8)
    enc = build_encoder(cfg, 20)
    assert enc.causal and type(enc.blocks[0]) is BLOCKS[ENCODERS[name].block]


def test_unregistered_block_is_refused_by_name():
    with pytest.raises(ValueError, match="registered"):
        SASRecEncoder(20, 16, 1, 2, 8, 0.0, block="nope")
