"""Encoder blocks, one file each, chosen by name: ``recsys.config.ENCODERS[model.name].block``.

Every block is an ``nn.Module`` with the same interface, so ``SASRecEncoder`` stacks any of
them between its embeddings and its final norm:

- ``__init__(dim, n_heads, dropout, sampler="bernoulli", max_len=..., **options)``: ``sampler``
  one of ``recsys.nn.layers.DROPOUT_SAMPLERS``; ``max_len`` the longest window the encoder
  reads (blocks with position-dependent parts size them by it); ``options`` the block's own
  typed keywords, which the config spells ``model.<block>_<option>`` (``options_from_config``).
- ``forward(x, attn_mask, n_queries=None)``: ``x`` (B, L, D); ``attn_mask`` (B, 1, L, L) bool,
  True where allowed (queries never see padding keys; causal: lower triangle; the diagonal
  always); returns (B, L, D), or with ``n_queries`` the outputs of the last Q positions only,
  (B, Q, D), with ``attn_mask`` then the last Q rows (B, 1, Q, L) (``SASRecEncoder.last_state``).

A causal block must keep outputs at a position independent of later positions and of how
much left padding its row has (``recsys.nn.kernels.grouped`` trims it); tests/nn checks both
for every name here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from recsys.config import ModelConfig
from recsys.nn.blocks.bsarec import BSARecBlock
from recsys.nn.blocks.hstu import HSTUBlock
from recsys.nn.blocks.ligr import LiGRBlock
from recsys.nn.blocks.sasrec import Block

BlockFactory = Callable[..., nn.Module]

BLOCKS: dict[str, BlockFactory] = {
    "sasrec": Block,
    "bsarec": BSARecBlock,
    "hstu": HSTUBlock,
    "ligr": LiGRBlock,
}


def options_from_config(cfg: ModelConfig, block: str) -> dict[str, Any]:
    """The block's own keywords from the config: ``model.<block>_<option>`` -> ``option``."""
    prefix = f"{block}_"
    return {f.name[len(prefix):]: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name.startswith(prefix)}


def build_block(
    name: str, dim: int, n_heads: int, dropout: float, sampler: str = "bernoulli", max_len: int = 50,
    **options: Any,
) -> nn.Module:
    if name not in BLOCKS:
        raise ValueError(f"unknown encoder block {name!r}; registered: {sorted(BLOCKS)}")
    return BLOCKS[name](dim, n_heads, dropout, sampler, max_len=max_len, **options)
