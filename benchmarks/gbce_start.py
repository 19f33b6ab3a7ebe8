"""Why gBCE with many negatives starts slowly, and what ``train.prior_offset`` changes.

    .venv/bin/python benchmarks/gbce_start.py                 # gBCE K=256 t=0.75, with and without the offset
    .venv/bin/python benchmarks/gbce_start.py --steps 900 --k 16 --t 0

A one-block SASRec encoder (d 64, dropout 0.2, Adam 1e-3, batch 128) learns a planted
first-order chain on 3,000 items: each next item is the last item's fixed successor with
probability 0.7, else uniform, so HR@10 of a perfect model is about 0.70. Plain Python loop
(no Lightning, no padding), one thread, seed 0; every ``--every`` steps it prints the mean
score of the target and of all items and HR@10 (full ranking of a fresh batch's last
position). Without the offset, every score first sinks together towards the loss's optimal
constant log(beta / K) and the target is not separated from the rest for hundreds of steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.nn.encoder import SASRecEncoder  # noqa: E402
from recsys.nn.losses import gbce  # noqa: E402


def walk(successor: torch.Tensor, n: int, batch: int, length: int, g: torch.Generator) -> torch.Tensor:
    x = torch.empty(batch, length + 1, dtype=torch.long)
    x[:, 0] = torch.randint(1, n + 1, (batch,), generator=g)
    for t in range(1, length + 1):
        follow = torch.rand(batch, generator=g) < 0.7
        x[:, t] = torch.where(follow, successor[x[:, t - 1] - 1], torch.randint(1, n + 1, (batch,), generator=g))
    return x


def run(prior_offset: bool, args) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n = args.items
    successor = torch.randperm(n, generator=g) + 1
    enc = SASRecEncoder(n, 64, 1, 1, 10, 0.2)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    for step in range(args.steps + 1):
        x = walk(successor, n, 128, 10, g)
        inputs, targets = x[:, :-1], x[:, 1:]
        if step % args.every == 0:
            enc.eval()
            with torch.no_grad():
                s = enc(inputs)[:, -1] @ enc.item_weights().T  # (B, n)
                pos = s.gather(1, (targets[:, -1] - 1)[:, None]).squeeze(1)
                hr = ((s > pos[:, None]).sum(1) < 10).float().mean().item()
            print(f"prior_offset={prior_offset!s:5} step {step:4d}  target score {pos.mean():6.2f}  "
                  f"all scores {s.mean():6.2f}  HR@10 {hr:.3f}", flush=True)
            enc.train()
        negatives = torch.randint(1, n + 1, (*targets.shape, args.k), generator=g)
        loss = gbce(enc(inputs), enc.item_weights(), targets, negatives, t=args.t, prior_offset=prior_offset)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--t", type=float, default=0.75)
    args = p.parse_args()
    torch.set_num_threads(1)
    for offset in (True, False):
        run(offset, args)


if __name__ == "__main__":
    main()
