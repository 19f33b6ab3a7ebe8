"""Ranking metrics as pure functions of 1-based ranks (one relevant item per user).

HR@K = [rank <= K];  NDCG@K = [rank <= K] / log2(rank + 1);  MRR@K = [rank <= K] / rank.
Each function returns the per-user values; ``summarise`` averages them in float64 over
all users at once, so the result cannot depend on how users were batched.
"""

from __future__ import annotations

import torch


def hr_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    return (ranks <= k).to(torch.float64)


def ndcg_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    gain = 1.0 / torch.log2(ranks.to(torch.float64) + 1.0)
    return torch.where(ranks <= k, gain, torch.zeros_like(gain))


def mrr_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    rr = 1.0 / ranks.to(torch.float64)
    return torch.where(ranks <= k, rr, torch.zeros_like(rr))


METRICS = {"hr": hr_at_k, "ndcg": ndcg_at_k, "mrr": mrr_at_k}


def summarise(ranks: torch.Tensor, ks: tuple[int, ...] | list[int]) -> dict[str, float]:
    """Mean of every metric at every K over all users: ``{"ndcg@10": ..., ...}``."""
    if ranks.numel() == 0:
        raise ValueError("no users to evaluate")
    if (ranks < 1).any():
        raise ValueError("ranks are 1-based")
    out = {}
    for name, fn in METRICS.items():
        for k in ks:
            out[f"{name}@{k}"] = float(fn(ranks, k).mean())
    return out
