"""LightningDataModule: event log -> vocabulary -> sequences -> split -> batch loaders.

The only module in ``recsys.data`` that imports Lightning. Loaders hand whole index
batches to the dataset, so collation is one vectorised call per batch, not per sample.
Every random choice (batch order, cloze masks) comes from generators this module owns,
seeded from ``seed``, so two runs with one seed see identical batches.

Under distributed training (Lightning DDP, one process per device) every process draws the
same global batches and keeps its own slice of each (``shard``), so the processes together
train on exactly the batches of a one-process run; evaluation gives each process a
contiguous block of users, so every user is scored once, never padded or repeated.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from recsys.config import DataConfig
from recsys.data.behaviour import gaps
from recsys.data.collate import EventTracks, churn_snapshot_labels, collate_cloze, collate_eval, collate_train
from recsys.data.events import EventLog, load_events, resolve_path
from recsys.data.sequences import EventVocab, ItemAttributes, Sequences, build_sequences, read_item_attributes
from recsys.data.splits import HeldOut, Split, cut_time, leave_one_out, temporal_split
from recsys.data.vocab import Vocab

OBJECTIVES = ("next", "cloze")
# Formats whose "timestamps" are event positions, not times (see recsys.data.events).
_POSITION_ONLY_FORMATS = ("s3rec", "user_item")


def shard(n: int, rank: int, world: int) -> slice:
    """Process ``rank``'s contiguous part of ``n`` rows split over ``world`` processes.

    Parts differ in size by at most one (the first ``n % world`` get the extra row), and
    together cover every row exactly once: no padding, no repeats. A part may be empty
    when ``n < world``.
    """
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (rank < extra))


class _BatchDataset(Dataset):
    """Indexing with a list of rows returns a collated batch.

    With ``part = (rank, world)`` the whole list is collated and the process keeps its
    ``shard`` of the rows: collating the global batch (not the slice) keeps the cloze masks
    and the padded width what a one-process run draws, so each row's tensors are the same.
    """

    def __init__(self, collate, items: np.ndarray, held: HeldOut, max_len: int,
                 part: tuple[int, int] = (0, 1)) -> None:
        self.collate, self.items, self.held, self.max_len = collate, items, held, max_len
        self.rank, self.world = part

    def __len__(self) -> int:
        return len(self.held)

    def __getitem__(self, rows):
        batch = self.collate(self.items, self.held, np.asarray(rows, dtype=np.int64), self.max_len)
        if self.world == 1:
            return batch
        mine = shard(len(rows), self.rank, self.world)
        return {key: value[mine] for key, value in batch.items()}  # every training field is (B, ...)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's random draws: a pure function of (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7_919 + 1) % (2**63 - 1)


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose order depends only on (seed, epoch).

    Lightning calls ``set_epoch`` before every epoch, resumed runs included, so an epoch
    drawn after a resume is the epoch the uninterrupted run drew. Generators listed in
    ``reseed`` (e.g. the cloze-masking one inside the collate function) are reset from
    the same key when the epoch's first batch is requested.
    """

    def __init__(self, n: int, batch_size: int, seed: int, reseed: tuple[torch.Generator, ...] = ()) -> None:
        self.n, self.batch_size, self.seed, self.reseed = n, batch_size, seed, reseed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        key = epoch_seed(self.seed, self.epoch)
        for offset, gen in enumerate(self.reseed, start=1):
            gen.manual_seed(key + offset)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(key)).tolist()
        for i in range(0, self.n, self.batch_size):
            yield perm[i : i + self.batch_size]


class LengthOrderedBatches(Sampler[list[int]]):
    """Evaluation batches of ``rows`` in order of history length, shortest first.

    A batch is left-padded to its longest history, so batching users of similar length
    cuts the padded positions the encoder runs over (S3-Rec Beauty, 22,363 test users,
    max length 200: 1.45M padded positions in user order at batch 256, 0.20M in length
    order). Metrics do not depend on the order: the module gathers per-user results and
    sorts them by user index. ``lengths[i]`` is row ``rows[i]``'s history length after
    truncation to the model's window; ties keep user order (stable sort).
    """

    def __init__(self, rows: np.ndarray, lengths: np.ndarray, batch_size: int) -> None:
        if len(rows) != len(lengths):
            raise ValueError(f"{len(rows)} rows but {len(lengths)} lengths")
        self.order = np.asarray(rows, dtype=np.int64)[np.argsort(lengths, kind="stable")]
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.order), self.batch_size):
            yield self.order[i : i + self.batch_size].tolist()


class SeqDataModule(pl.LightningDataModule):
    """``objective``: ``next`` (SASRec pairs) or ``cloze`` (BERT4Rec masking with
    ``mask_prob``; evaluation appends a [MASK]). With ``data.event_col`` set, sequences carry
    action ids and batches the action fields; ``purchase_horizon`` > 0 adds purchase labels
    for the action named ``purchase_event``. ``data.item_attributes`` loads item attributes.
    ``time_features``: batches carry the time since each event's predecessor (``gaps``,
    ``next_gaps``); ``churn_horizon_s`` > 0 (temporal splits): churn snapshot labels of the
    training events (``recsys.data.collate.churn_snapshot_labels``)."""

    def __init__(
        self,
        data: DataConfig,
        max_len: int,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        vocab: Vocab | None = None,
        objective: str = "next",
        mask_prob: float = 0.2,
        purchase_event: str = "buy",
        purchase_horizon: int = 0,
        event_vocab: EventVocab | None = None,
        time_features: bool = False,
        churn_horizon_s: float = 0.0,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.data_cfg = data
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.vocab = vocab
        self.objective, self.mask_prob = objective, mask_prob
        self.purchase_event, self.purchase_horizon = purchase_event, purchase_horizon
        self.event_vocab = event_vocab
        self.time_features, self.churn_horizon_s = time_features, churn_horizon_s
        self.events: EventLog | None = None
        self.split: Split | None = None
        self.tracks: EventTracks | None = None
        self.item_attributes: ItemAttributes | None = None

    def prepare(self) -> SeqDataModule:
        """Load and split once; idempotent. Call before building the model (it needs n_items)."""
        if self.split is None:
            cfg = self.data_cfg
            self.events = load_events(cfg)
            if self.vocab is None:
                self.vocab = Vocab.build(self.events.frame["item"])
            if cfg.event_col is not None and self.event_vocab is None:
                self.event_vocab = EventVocab.build(self.events.frame["event"])
            seqs = build_sequences(self.events.frame, self.vocab, self.event_vocab if cfg.event_col else None)
            if cfg.split == "temporal":
                self.split = temporal_split(seqs, cfg.split_quantile, cfg.split_valid_quantile)
            else:
                self.split = leave_one_out(seqs)
            if seqs.events is not None:
                purchase_id = self.event_vocab.id(self.purchase_event) if self.purchase_horizon > 0 else None
                churn = None
                if self.churn_horizon_s > 0:  # snapshots of the training period (temporal split)
                    visible = cut_time(seqs.timestamps, cfg.split_valid_quantile)
                    churn = churn_snapshot_labels(seqs.timestamps, self.split.train, visible, self.churn_horizon_s,
                                                  self.seed)
                self.tracks = EventTracks.build(seqs.events, seqs.offsets, purchase_id, self.purchase_horizon,
                                                gaps=gaps(seqs) if self.time_features else None, churn=churn)
            if cfg.item_attributes is not None:
                path = resolve_path(dataclasses.replace(cfg, path=cfg.item_attributes))
                self.item_attributes = read_item_attributes(path, self.vocab)
        return self

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    @property
    def sequences(self) -> Sequences:
        assert self.split is not None, "call prepare() first"
        return self.split.sequences

    @property
    def has_timestamps(self) -> bool:
        """False when the format carries event positions instead of times (s3rec,
        user_item, or a table without ``time_col``)."""
        return self.data_cfg.format not in _POSITION_ONLY_FORMATS and self.data_cfg.time_col is not None

    def train_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, stop): user u's training events are ``items[start[u]:stop[u]]``, the
        inputs and targets of training, never a validation or test target."""
        held = self.split.train
        return held.start, held.end + 1

    def train_item_counts(self) -> np.ndarray:
        """(n + 1,) occurrences of each token among the training events (index 0 = PAD = 0)."""
        start, stop = self.train_ranges()
        lengths = stop - start
        positions = np.repeat(start - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
        return np.bincount(self.sequences.items[positions], minlength=self.vocab.n_items + 1)

    def _train_collate(self):
        if self.objective == "cloze":
            # Owned here and created per loader, so every fit starts from the same masks.
            gen = torch.Generator().manual_seed(self.seed + 1)
            return partial(collate_cloze, mask_prob=self.mask_prob, mask_token=self.vocab.mask_id, generator=gen)
        return partial(collate_train, tracks=self.tracks)

    def _part(self) -> tuple[int, int]:
        """(rank, world size) of this process: (0, 1) unless a distributed Trainer runs it."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, held: HeldOut, train: bool, validation: bool = False) -> DataLoader:
        # The Trainer must not swap in a DistributedSampler (run.py turns that off): these
        # samplers shard by themselves, and its padding would evaluate some users twice.
        items = self.sequences.items
        rank, world = self._part()
        if train:
            # Plain shuffled batches. Length-bucketed batches were tried: they cut padding
            # compute but gave each short row's tokens more weight in the loss, and cost
            # about 12% validation NDCG@10 on S3-Rec Beauty at equal epochs.
            # Every process draws the same global batches (same seed, same count, so no
            # process waits on a gradient sync that never comes) and keeps its slice.
            collate = self._train_collate()
            reseed = tuple(v for v in collate.keywords.values() if isinstance(v, torch.Generator))
            sampler = EpochBatchSampler(len(held), self.batch_size, self.seed, reseed)
            dataset = _BatchDataset(collate, items, held, self.max_len, part=(rank, world))
        else:
            users = shard(len(held), rank, world)
            if users.start == users.stop:
                raise ValueError(f"no evaluation users for process {rank} of {world}: the split holds {len(held)}")
            mask = self.vocab.mask_id if self.objective == "cloze" else None
            rows = np.arange(users.start, users.stop)
            width = self.max_len if mask is None else self.max_len - 1  # as collate_eval's window
            lengths = np.minimum(held.end[rows] - held.start[rows], width)
            sampler = LengthOrderedBatches(rows, lengths, self.eval_batch_size)
            # a validation purchase label reads no event after the validation target (the test's)
            collate = partial(collate_eval, tracks=self.tracks, mask_token=mask, label_through_target=validation)
            dataset = _BatchDataset(collate, items, held, self.max_len)
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split.valid, train=False, validation=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split.test, train=False)
