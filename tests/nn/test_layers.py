import pytest
import torch
import torch.nn.functional as F

from recsys.config import DROPOUT_SAMPLERS as CONFIG_SAMPLERS
import numpy as np

from recsys.nn.layers import DROPOUT_SAMPLERS, Dropout, attend, dropout, keep_mask, keep_multiplier


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


@pytest.mark.parametrize("n", [1, 3, 4, 5, 1001])
def test_uniform_masks_are_numpys_16_bit_integers_read_as_signed(n):
    """The "uniform" sampler's definition, kept by every version: seed = one torch draw,
    u = numpy PCG64 ``integers(0, 2^16, n, uint16)``, keep where u as int16 < t - 2^15."""
    keep = 0.8
    torch.manual_seed(11)
    mask = keep_mask((n,), keep, torch.device("cpu"))
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2**62, ()))
    u = np.random.default_rng(seed).integers(0, 2**16, size=n, dtype=np.uint16)
    expected = u.view(np.int16) < round(keep * 2**16) - 2**15
    assert torch.equal(mask, torch.from_numpy(expected))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("keep", [0.8, 0.7, 1 / 3])
def test_keep_multiplier_is_the_mask_cast_and_scaled(dtype, keep):
    torch.manual_seed(4)
    m = keep_multiplier(torch.Size((5, 33, 7)), keep, dtype, torch.device("cpu"))
    torch.manual_seed(4)
    expected = keep_mask(torch.Size((5, 33, 7)), keep, torch.device("cpu")).to(dtype).mul_(1.0 / keep)
    assert m.dtype == dtype and m.shape == (5, 33, 7)
    assert torch.equal(m, expected)
    assert set(m.unique().tolist()) == {0.0, torch.tensor(1.0 / keep, dtype=dtype).item()}


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


@pytest.mark.parametrize("dh", [4, 16, 6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_written_out_attention_is_the_scaled_masked_softmax(dh, dtype):
    """The scores come out of one product that scales and adds the mask as a bias: the same
    bits as scaling and masking after the product when 1 / sqrt(Dh) is a power of two."""
    q, k, v, mask = _qkv_mask(H=1, Dh=dh)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    scores = (q @ k.transpose(-2, -1)).mul_(1.0 / dh**0.5).masked_fill_(~mask, float("-inf"))
    expected = scores.softmax(dim=-1) @ v
    got = attend(q, k, v, mask, 0.0, explicit=True)
    assert got.dtype == dtype
    if dh in (4, 16):
        assert torch.equal(got, expected)
    else:
        assert torch.allclose(got.float(), expected.float(), atol=1e-2 if dtype == torch.bfloat16 else 1e-6)


def test_written_out_attention_drops_weights_unbiasedly():
    """Averaged over many draws, dropout on the weights leaves the expected output unchanged."""
    q, k, v, mask = _qkv_mask()
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.manual_seed(2)
    mean = torch.stack([attend(q, k, v, mask, 0.5, "uniform") for _ in range(4000)]).mean(0)
    assert (mean - expected).abs().max() < 0.1
    one = attend(q, k, v, mask, 0.5, "uniform")
    assert (one - expected).abs().max() > 0.3  # a single draw does differ
