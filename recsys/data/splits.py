"""Train / validation / test splits as index ranges into ``Sequences.items``.

A held-out example is ``(start, end)``: its input is ``items[start:end]`` and its target
is ``items[end]``. The target's position is therefore always after every input
position, which is what "no target in its own input" means for an event log; an item the
user consumed earlier may still appear in the input, as it did in reality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.sequences import Sequences


@dataclass(frozen=True)
class HeldOut:
    user: np.ndarray  # (U,) dense user index
    start: np.ndarray  # (U,) first input position
    end: np.ndarray  # (U,) one past the last input position == target position

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True)
class Split:
    sequences: Sequences
    train: HeldOut  # training sequence of user u is items[start:end + 1]: inputs and next-item targets
    valid: HeldOut
    test: HeldOut


def leave_one_out(seqs: Sequences) -> Split:
    """Last event of each user is the test target, the second-to-last the validation target.

    Validation inputs stop before the validation target and so exclude the test event;
    training sequences stop before the validation target. Users need >= 3 events.
    """
    lengths = seqs.lengths
    if (lengths < 3).any():
        raise ValueError("leave-one-out needs at least 3 events per user (train, valid, test)")
    users = np.arange(seqs.n_users, dtype=np.int64)
    start = seqs.offsets[:-1]
    last = seqs.offsets[1:] - 1  # test target position
    return Split(
        sequences=seqs,
        # training covers items[start:last - 1]: its final target sits at last - 2
        train=HeldOut(users, start, last - 2),
        valid=HeldOut(users, start, last - 1),
        test=HeldOut(users, start, last),
    )
