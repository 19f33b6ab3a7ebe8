"""Hidden states -> item scores over the full catalogue, and the action-type heads."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def score_items(user_state: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
    """Dot-product scores (B, V) for token ids 0..n; the PAD column is -inf.

    user_state: (B, D); item_weights: (n, D) for real items 1..n.
    """
    needs_grad = torch.is_grad_enabled() and (user_state.requires_grad or item_weights.requires_grad)
    if needs_grad or torch.compiler.is_compiling() or torch.jit.is_tracing():
        scores = user_state @ item_weights.T  # (B, n)
        pad = torch.full_like(scores[:, :1], float("-inf"))  # column PAD_ID == 0
        return torch.cat([pad, scores], dim=1)  # (B, n + 1)
    # Eager inference: the product writes straight into columns 1..n of the result (a
    # strided view), which saves the copy of the whole (B, n) block that cat makes.
    out = user_state.new_empty((user_state.shape[0], item_weights.shape[0] + 1))
    out[:, 0] = float("-inf")  # column PAD_ID == 0
    torch.mm(user_state, item_weights.T, out=out[:, 1:])
    return out  # (B, n + 1)


class ActionHeads(nn.Module):
    """Multi-task heads on the encoder's hidden states, for logs with action types.

    ``action``: logits over the E action types of the *next* event (id c + 1 is column c).
    ``purchase`` (optional): one logit, "a purchase happens within the next k events",
    a conversion signal; k is a property of the labels, not of the head.
    """

    def __init__(self, dim: int, n_events: int, purchase: bool = False) -> None:
        super().__init__()
        self.action = nn.Linear(dim, n_events)
        self.purchase = nn.Linear(dim, 1) if purchase else None

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden: (..., D) -> action logits (..., E) and purchase logits (...) or None."""
        purchase = self.purchase(hidden).squeeze(-1) if self.purchase is not None else None
        return self.action(hidden), purchase


class TransitionHead(nn.Module):
    """A mixture of the catalogue softmax and item-to-item transitions from the last items.

    One d-dimensional dot product cannot express a mixture of sparse, unrelated next-item
    distributions: the log-probability matrix of "item s is followed by one of its few
    successors" has rank up to V (the softmax bottleneck, Yang et al., ICLR 2018). This head
    predicts

        P(j | history) = g_0 softmax(h W^T)_j + sum_k g_k T_k(j | s_k),
        T_k(j | s) = max(c_k(s, j) - d_k, 0) / sum_j' max(c_k(s, j') - d_k, 0)

    where ``s_k`` is the item k steps back (k = 1..``lags``), ``c_k(s, j)`` how often ``j``
    followed ``s`` at lag k in the training events (for the ``width`` most frequent ``j``;
    the rest count 0) and ``d_k`` in (0, 1) a learned absolute discount (Ney, Essen & Kneser
    1994): a pair seen once, as background draws often are, keeps little weight, a repeated
    one nearly all of it, so ``T_k`` estimates the part of the next-item law that the
    lag-k item itself drives, not the whole conditional. ``g = softmax(G h + A f)`` are
    learned gates (component 0 the softmax) that read the encoder's state ``h`` and, per
    lag, ``f = (log(1 + n_k(s)), m_k(s))``: how often the source had an item k steps later
    and which share of those counts survives the discount, so the model decides in context
    how far to trust each lag. A sparse,
    full-rank term beside the low-rank one, mixed in probability, as in mixture-of-softmaxes
    and pointer-generator heads. In training, a position's own pair is taken out of the
    counts it reads (leave-one-out), so the gates and discounts learn how well the counts
    predict pairs they have not seen, as at test time; a source with no other occurrence
    gives its lag no weight.

    Training (``recsys.nn.losses.Mixture``): the mixture's negative log-likelihood plus
    ``ce_weight`` times the softmax's own cross-entropy. The mixture's gradient reaches the
    softmax only in proportion to its responsibility for each target; alone, it leaves the
    softmax a specialist in what the counts miss, which on sparse real data (S3-Rec Beauty)
    scored below plain SASRec.

    Buffers (token ids): ``cols`` (lags, n + 2, width) the target items (0 in unused
    slots), ``counts`` their counts, ``totals`` (lags, n + 2) the ``n_k(s)``.
    """

    def __init__(self, n_items: int, dim: int, lags: int, width: int, ce_weight: float = 1.0) -> None:
        super().__init__()
        if lags < 1 or width < 1 or ce_weight < 0:
            raise ValueError(f"lags and width must be >= 1 and ce_weight >= 0, got {lags}, {width}, {ce_weight}")
        self.n_items, self.lags, self.width, self.ce_weight = n_items, lags, width, ce_weight
        shape = (lags, n_items + 2, width)  # rows: PAD, items 1..n, MASK
        self.register_buffer("cols", torch.zeros(shape, dtype=torch.int64))
        self.register_buffer("counts", torch.zeros(shape))
        self.register_buffer("totals", torch.zeros(shape[:2]))
        self.gate = nn.Linear(dim, lags + 1)  # component 0: the catalogue softmax
        self.count_weight = nn.Parameter(torch.zeros(2, lags))  # A: (log(1 + n), kept share) per lag
        self.discount_logit = nn.Parameter(torch.full((lags,), math.log(0.75 / 0.25)))  # d = 0.75 at start
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    @torch.no_grad()
    def fit_pattern(self, items, start, stop) -> None:
        """Fill the buffers from training events: user u's events are token ids
        ``items[start[u]:stop[u]]``, oldest first (numpy arrays). Only pairs inside one
        user's training events count."""
        items, start, stop = np.asarray(items), np.asarray(start), np.asarray(stop)
        lengths = stop - start
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        pos = np.arange(int(lengths.sum())) + np.repeat(start - first, lengths)  # every training event
        step = np.arange(int(lengths.sum())) - np.repeat(first, lengths)  # its index in its user's events
        V = self.n_items + 2
        cols = np.zeros((self.lags, V, self.width), dtype=np.int64)
        counts = np.zeros((self.lags, V, self.width), dtype=np.float32)
        totals = np.zeros((self.lags, V), dtype=np.float32)
        for k in range(1, self.lags + 1):
            tgt_pos = pos[step >= k]
            key = items[tgt_pos - k].astype(np.int64) * V + items[tgt_pos]
            totals[k - 1] = np.bincount(items[tgt_pos - k], minlength=V)
            pairs, count = np.unique(key, return_counts=True)
            s, t = pairs // V, pairs % V
            order = np.lexsort((t, -count, s))  # per source: most frequent first, ties by id
            s, t, count = s[order], t[order], count[order]
            slot = np.arange(len(s)) - np.searchsorted(s, s, side="left")
            keep = slot < self.width
            cols[k - 1, s[keep], slot[keep]] = t[keep]
            counts[k - 1, s[keep], slot[keep]] = count[keep]
        self.cols.copy_(torch.from_numpy(cols))
        self.counts.copy_(torch.from_numpy(counts))
        self.totals.copy_(torch.from_numpy(totals))

    def sources(self, inputs: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Source items of each scored position, (N, lags): the input at the position and
        the ones before it (PAD before the history starts). ``positions`` (B, L) bool
        selects positions (row-major, as a loss reads them); ``None`` takes each row's
        newest position, (B, lags)."""
        if positions is None:
            # padded on the left by `lags` PADs, so the k-th newest column exists for any L
            # (no branch on L: the exported graph serves every length)
            padded = F.pad(inputs, (self.lags, 0))  # (B, lags + L)
            return torch.stack([padded[:, -k] for k in range(1, self.lags + 1)], dim=1)  # (B, lags)
        shifted = [F.pad(inputs, (k, 0))[:, : inputs.shape[1]] for k in range(self.lags)]  # k steps back
        return torch.stack([s[positions] for s in shifted], dim=1)  # (N, lags)

    def _gates(self, state: torch.Tensor, totals: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
        """Mixture weights (N, lags + 1) from the states, the sources' counts ``totals``
        (N, lags) and their discounted mass (N, lags); a lag with no mass gets weight 0."""
        logits = self.gate(state)  # (N, lags + 1)
        share = mass / totals.clamp(min=1.0)
        lag_logits = logits[:, 1:] + self.count_weight[0] * torch.log1p(totals) + self.count_weight[1] * share
        lag_logits = lag_logits.masked_fill(mass <= 0, float("-inf"))
        return torch.softmax(torch.cat([logits[:, :1], lag_logits], dim=1), dim=1)

    def _discounted(self, counts: torch.Tensor) -> torch.Tensor:
        """max(c - d_k, 0) for counts (N, lags, width)."""
        d = torch.sigmoid(self.discount_logit)[None, :, None]
        return (counts - d).clamp(min=0.0)

    def training_mixture(
        self, state: torch.Tensor, inputs: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the softmax's weight g_0 (N,), the lags' probability of the target (N,)) at the
        selected positions, for ``recsys.nn.losses.Mixture``; each position's own pair is
        left out of the counts (leave-one-out). ``state`` (N, D), ``targets`` (N,) token ids."""
        src = self.sources(inputs, positions)  # (N, lags)
        lag = torch.arange(self.lags, device=src.device)[None, :]
        counts = self.counts[lag, src]  # (N, lags, width)
        hit = (self.cols[lag, src] == targets[:, None, None]) & (counts > 0)  # the target's slot
        kept = self._discounted(counts - hit.to(counts.dtype))  # this occurrence taken out
        mass = kept.sum(dim=2)  # (N, lags)
        totals = self.totals[lag, src] - (src != 0).to(counts.dtype)  # a real source's pair was counted
        g = self._gates(state, totals, mass)  # (N, lags + 1)
        target_p = (kept * hit).sum(dim=2) / mass.clamp(min=1e-6)  # (N, lags)
        return g[:, 0], (g[:, 1:] * target_p).sum(dim=1)

    def log_probs(self, state: torch.Tensor, item_weights: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """log P(token | history) (B, n + 1) for the newest positions; column PAD is -inf."""
        src = self.sources(inputs)  # (B, lags)
        lag = torch.arange(self.lags, device=src.device)[None, :]
        kept = self._discounted(self.counts[lag, src])  # (B, lags, width)
        mass = kept.sum(dim=2)  # (B, lags)
        g = self._gates(state, self.totals[lag, src], mass)  # (B, lags + 1)
        kept = kept * (g[:, 1:] / mass.clamp(min=1e-6))[:, :, None]  # each lag's share of P
        probs = torch.softmax(state @ item_weights.T, dim=1) * g[:, :1]  # (B, n)
        probs = torch.cat([torch.zeros_like(probs[:, :1]), probs], dim=1)  # (B, n + 1), PAD column
        probs = probs.scatter_add(1, self.cols[lag, src].flatten(1), kept.flatten(1))
        log_p = torch.log(probs)
        return torch.cat([torch.full_like(log_p[:, :1], float("-inf")), log_p[:, 1:]], dim=1)
