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


def split_name(split: str, quantile: float, valid_quantile: float, by_time: bool = True) -> str:
    """The protocol's name for ``data.split`` as run directories record it: ``leave-one-out``,
    or ``temporal (...)`` with its cuts; ``by_time=False`` (files that carry only the order
    of events) says that the cut is on event positions."""
    if split == "loo":
        return "leave-one-out"
    if split != "temporal":
        raise ValueError(f"unknown split {split!r}")
    clock = "event time" if by_time else "event position, per-position"
    return f"temporal (test cut at the {quantile} quantile of {clock}, validation cut at the {valid_quantile} quantile)"


def cut_time(timestamps: np.ndarray, quantile: float) -> int:
    """The ``quantile`` quantile of all event timestamps, taken as an actual timestamp.

    Uses numpy's ``lower`` method, so the cut is the timestamp of a real event; an event
    is *after* the cut when its timestamp is strictly greater.
    """
    if len(timestamps) == 0:
        raise ValueError("no events to cut")
    return int(np.quantile(timestamps, quantile, method="lower"))


def temporal_split(seqs: Sequences, quantile: float = 0.9, valid_quantile: float = 0.8) -> Split:
    """Global temporal split: one cut in time for all users, not one per user.

    With ``t_test = cut_time(all timestamps, quantile)`` and ``t_valid = cut_time(...,
    valid_quantile)`` (``valid_quantile < quantile``):

    - **test**: for every user with at least one event at or before ``t_test`` and at least
      one after it, the target is the user's first event after ``t_test``; the input is the
      user's whole history up to ``t_test`` (exactly the events before the target);
    - **validation**: the same with ``t_valid``, for users whose first event after
      ``t_valid`` is not after ``t_test``;
    - **training**: each user's events at or before ``t_valid`` (users with at least two
      such events, since one event gives no next-item pair). No training event is later
      than ``t_valid``, so none is later than ``t_test``, and no other user's future leaks
      into training (Ji et al., TOIS 2023, on leave-one-out's leakage).

    Events after ``t_valid`` are never trained on; those up to ``t_test`` still serve as
    test *inputs*, as they would for a model deployed at ``t_test``. Users with no event
    before a cut (cold start) or none after it are not evaluated at that cut; held-out
    rows keep the data's user order, so ranks of two models on one split line up.

    ``Sequences.timestamps`` must be non-decreasing within each user (the canonical order
    of ``load_events``). For files without timestamps they are event positions, and the
    cut is then on position: a per-position split, not a global time split.
    """
    if not 0.0 < valid_quantile < quantile < 1.0:
        raise ValueError(f"need 0 < valid_quantile < quantile < 1, got {valid_quantile} and {quantile}")
    ts = seqs.timestamps
    lengths = seqs.lengths
    user_of = np.repeat(np.arange(seqs.n_users), lengths)  # (N,) user of each event
    if len(ts) > 1 and np.any((np.diff(ts) < 0) & (user_of[1:] == user_of[:-1])):
        raise ValueError("timestamps must be non-decreasing within each user")
    t_test, t_valid = cut_time(ts, quantile), cut_time(ts, valid_quantile)
    start = seqs.offsets[:-1]
    # Events of a user are time-ordered, so those at or before a cut form a prefix.
    n_test = np.bincount(user_of, weights=ts <= t_test, minlength=seqs.n_users).astype(np.int64)
    n_valid = np.bincount(user_of, weights=ts <= t_valid, minlength=seqs.n_users).astype(np.int64)
    users = np.arange(seqs.n_users, dtype=np.int64)

    def held(mask: np.ndarray, end: np.ndarray) -> HeldOut:
        return HeldOut(users[mask], start[mask], end[mask])

    test_mask = (n_test >= 1) & (n_test < lengths)
    end_valid = start + n_valid
    valid_mask = (n_valid >= 1) & (n_valid < lengths)
    valid_mask[valid_mask] &= ts[end_valid[valid_mask]] <= t_test  # target not in the test period
    train_mask = n_valid >= 2
    for name, mask in (("test", test_mask), ("validation", valid_mask), ("training", train_mask)):
        if not mask.any():
            raise ValueError(
                f"temporal split (cuts at {t_valid} and {t_test}) leaves no {name} users; "
                "move data.split_valid_quantile / data.split_quantile"
            )
    return Split(
        sequences=seqs,
        train=held(train_mask, start + n_valid - 1),  # last training target: the last event <= t_valid
        valid=held(valid_mask, end_valid),
        test=held(test_mask, start + n_test),
    )
