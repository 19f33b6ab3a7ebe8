import torch

from recsys.config import ModelConfig
from recsys.nn.encoder import SASRecEncoder, build_encoder


def _encoder(**kw):
    torch.manual_seed(0)
    enc = SASRecEncoder(n_items=20, dim=16, n_blocks=2, n_heads=2, max_len=8, dropout=0.0, **kw)
    return enc.eval()


def test_changing_a_later_position_leaves_earlier_outputs_unchanged():
    enc = _encoder()
    x = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    y = x.clone()
    y[0, 5] = 19
    hx, hy = enc(x), enc(y)
    assert torch.allclose(hx[:, :5], hy[:, :5], atol=1e-6)
    assert not torch.allclose(hx[:, 5:], hy[:, 5:], atol=1e-3)


def test_bidirectional_mode_is_not_causal():
    enc = _encoder(causal=False)
    x = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    y = x.clone()
    y[0, 5] = 19
    assert not torch.allclose(enc(x)[:, 2], enc(y)[:, 2], atol=1e-4)


def test_padding_does_not_change_real_outputs():
    """Left-padding a row further (a longer batch-mate) leaves its last state unchanged."""
    enc = _encoder()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 3, 4, 5]])
    assert torch.allclose(enc(short)[:, -1], enc(padded)[:, -1], atol=1e-6)


def test_padding_row_gives_finite_outputs_and_output_is_tied():
    enc = _encoder()
    h = enc(torch.tensor([[0, 0, 0, 1]]))
    assert torch.isfinite(h).all()
    assert enc.item_weights().data_ptr() == enc.item_emb.weight[1:].data_ptr()
    assert enc.item_weights().shape == (20, 16)


def test_config_defaults_equal_constructor_defaults():
    import inspect

    params = inspect.signature(SASRecEncoder).parameters
    cfg = ModelConfig()
    for name in ("dim", "n_blocks", "n_heads", "max_len", "dropout"):
        assert getattr(cfg, name) == params[name].default, name
    assert isinstance(build_encoder(cfg, 10), SASRecEncoder)
