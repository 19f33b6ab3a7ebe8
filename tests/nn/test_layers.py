import pytest
import torch
import torch.nn.functional as F

from recsys.config import DROPOUT_SAMPLERS as CONFIG_SAMPLERS
from recsys.nn.layers import DROPOUT_SAMPLERS, Dropout, attend, dropout


def test_config_lists_the_dropout_samplers_the_layers_implement():
    assert CONFIG_SAMPLERS == DROPOUT_SAMPLERS


@pytest.mark.parametrize("sampler", DROPOUT_SAMPLERS)
def test_dropout_drops_at_rate_p_and_keeps_the_mean(sampler):
    torch.manual_seed(0)
    x = torch.full((400_000,), 2.0)
    y = dropout(x, 0.3, True, sampler)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.003  # 4.6 standard errors of a 400k-draw rate
    assert torch.allclose(y[y != 0], torch.tensor(2.0 / 0.7))
    assert abs(y.mean().item() - 2.0) < 0.01


@pytest.mark.parametrize("sampler", DROPOUT_SAMPLERS)
def test_dropout_is_the_identity_in_eval_mode_and_at_p_zero(sampler):
    x = torch.randn(5, 7)
    layer = Dropout(0.5, sampler).eval()
    assert layer(x) is x
    assert dropout(x, 0.0, True, sampler) is x


def test_uniform_dropout_gradient_is_the_mask_and_it_repeats_under_a_seed():
    x = torch.randn(64, 32, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.25, True, "uniform")
    y.sum().backward()
    kept = y.detach() != 0
    assert torch.equal(x.grad, kept.float() / 0.75)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.25, True, "uniform"), y)


def test_dropout_rejects_an_unknown_sampler():
    with pytest.raises(ValueError, match="dropout sampler must be one of"):
        Dropout(0.1, "gaussian")


def _qkv_mask(B=3, H=2, L=6, Dh=4):
    torch.manual_seed(1)
    q, k, v = (torch.randn(B, H, L, Dh) for _ in range(3))
    mask = torch.ones(L, L, dtype=torch.bool).tril()[None, None] & (torch.rand(B, 1, 1, L) > 0.2)
    return q, k, v, mask | torch.eye(L, dtype=torch.bool)


def test_written_out_attention_equals_torchs_kernel_without_dropout():
    q, k, v, mask = _qkv_mask()
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(attend(q, k, v, mask, 0.0, explicit=True), expected, atol=1e-6)


def test_written_out_attention_drops_weights_unbiasedly():
    """Averaged over many draws, dropout on the weights leaves the expected output unchanged."""
    q, k, v, mask = _qkv_mask()
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.manual_seed(2)
    mean = torch.stack([attend(q, k, v, mask, 0.5, "uniform") for _ in range(4000)]).mean(0)
    assert (mean - expected).abs().max() < 0.1
    one = attend(q, k, v, mask, 0.5, "uniform")
    assert (one - expected).abs().max() > 0.3  # a single draw does differ
