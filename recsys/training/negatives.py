"""Seeded negative sampling for the sampled losses (``recsys.nn.losses`` never samples).

A sampler draws token ids 1..n and returns, with them, ``log q``: the log-probability
that one draw returns that item, which ``sampled_softmax`` uses for its logQ correction.

- ``uniform``: every item with probability 1/n (gSASRec and the original SASRec);
- ``popularity``: proportional to the item's count among the training events;
- ``in_batch``: a uniformly chosen target position of the current batch, so an item is
  drawn in proportion to how often it is a target in this batch; ``q`` is that exact
  in-batch frequency.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from recsys.types import PAD_ID

Draw = Callable[["NegativeSampler", torch.Tensor, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]]


def _uniform(s: NegativeSampler, targets: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    negatives = torch.randint(1, s.n_items + 1, shape, generator=s.generator)
    return negatives, torch.full(shape, -math.log(s.n_items))


def _popularity(s: NegativeSampler, targets: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    flat = torch.multinomial(s.probs, math.prod(shape), replacement=True, generator=s.generator)
    negatives = (flat + 1).view(shape)
    return negatives, s.probs[flat].log().view(shape)


def _in_batch(s: NegativeSampler, targets: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    pool = targets[targets != PAD_ID]  # (T,) every target of the batch, repeats included
    if pool.numel() == 0:
        raise ValueError("in-batch sampling needs at least one target in the batch")
    negatives = pool[torch.randint(0, pool.numel(), shape, generator=s.generator)]
    freq = torch.bincount(pool, minlength=s.n_items + 1).to(torch.float32) / pool.numel()
    return negatives, freq[negatives].log()


SAMPLERS: dict[str, Draw] = {"uniform": _uniform, "popularity": _popularity, "in_batch": _in_batch}


class NegativeSampler:
    """``sampler(targets, shape)`` -> (negatives, log_q), both of ``shape``.

    ``item_counts``: (n + 1,) training counts per token (index 0 ignored), needed by
    ``popularity``. The generator is private and seeded, so a run repeats exactly.
    """

    def __init__(self, kind: str, n_items: int, seed: int, item_counts: torch.Tensor | None = None) -> None:
        if kind not in SAMPLERS:
            raise ValueError(f"unknown sampler {kind!r}; choose from {sorted(SAMPLERS)}")
        self.kind, self.n_items = kind, n_items
        self.generator = torch.Generator().manual_seed(seed)
        self.probs: torch.Tensor | None = None
        if kind == "popularity":
            if item_counts is None or item_counts[1:].sum() <= 0:
                raise ValueError("the popularity sampler needs training item counts")
            counts = item_counts[1:].to(torch.float64)
            self.probs = (counts / counts.sum()).to(torch.float32)  # (n,)

    def __call__(self, targets: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        return SAMPLERS[self.kind](self, targets, shape)
