"""LiGR block (``recsys.nn.blocks.ligr``): the gated pre-norm layer of eSASRec, written out.
Causality, the one-query path and padding invariance are held in ``test_hstu.py`` for both."""

import torch
import torch.nn.functional as F

from recsys.config import ModelConfig
from recsys.nn.blocks.ligr import FFN_MULT, LiGRBlock
from recsys.nn.encoder import build_encoder


def _ligr(dim=8):
    torch.manual_seed(0)
    return LiGRBlock(dim, 2, 0.0, max_len=6).eval()


def test_ligr_is_two_sigmoid_gated_residuals_around_attention_and_swiglu():
    block = _ligr()
    x = torch.randn(2, 5, 8)
    mask = torch.ones(5, 5, dtype=torch.bool).tril().expand(2, 1, 5, 5)
    a = block.attn(block.ln1(x), mask)
    h = x + torch.sigmoid(block.gate1(x)) * a  # the gate reads the stream, not LN(x)
    f = block.ffn.w2(F.silu(block.ffn.w1(block.ln2(h))) * block.ffn.w3(block.ln2(h)))
    torch.testing.assert_close(block(x, mask), h + torch.sigmoid(block.gate2(h)) * f, atol=1e-6, rtol=1e-5)


def test_closed_gates_pass_the_input_through():
    block = _ligr()
    with torch.no_grad():
        for gate in (block.gate1, block.gate2):
            gate.weight.zero_()
            gate.bias.fill_(-1e4)  # sigmoid -> 0
    x = torch.randn(2, 5, 8)
    mask = torch.ones(5, 5, dtype=torch.bool).tril().expand(2, 1, 5, 5)
    assert torch.equal(block(x, mask), x)


def test_swiglu_has_no_biases_and_its_width_is_ffn_mult_times_dim():
    ffn = _ligr().ffn
    assert [lin.bias for lin in (ffn.w1, ffn.w2, ffn.w3)] == [None, None, None]
    assert ffn.w1.weight.shape == ffn.w3.weight.shape == (FFN_MULT * 8, 8)
    assert LiGRBlock(8, 2, 0.0, ffn_mult=1).ffn.w2.weight.shape == (8, 8)
    # the config's model.ligr_ffn_mult reaches every block
    enc = build_encoder(ModelConfig(name="ligr", dim=8, n_heads=2, ligr_ffn_mult=2), 10)
    assert {block.ffn.w2.weight.shape for block in enc.blocks} == {(8, 16)}

