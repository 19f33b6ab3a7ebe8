"""LightningDataModule: event log -> vocabulary -> sequences -> split -> batch loaders.

The only module in ``recsys.data`` that imports Lightning. Loaders hand whole index
batches to the dataset, so collation is one vectorised call per batch, not per sample.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from recsys.config import DataConfig
from recsys.data.collate import collate_eval, collate_train
from recsys.data.events import EventLog, load_events
from recsys.data.sequences import Sequences, build_sequences
from recsys.data.splits import HeldOut, Split, leave_one_out, temporal_split
from recsys.data.vocab import Vocab


class _BatchDataset(Dataset):
    """Indexing with a list of rows returns a collated batch."""

    def __init__(self, collate, items: np.ndarray, held: HeldOut, max_len: int) -> None:
        self.collate, self.items, self.held, self.max_len = collate, items, held, max_len

    def __len__(self) -> int:
        return len(self.held)

    def __getitem__(self, rows):
        return self.collate(self.items, self.held, np.asarray(rows, dtype=np.int64), self.max_len)


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar-length sequences, so little compute goes to padding.

    Each epoch: a seeded permutation of all rows is cut into windows of ``window``
    batches; rows are sorted by length inside each window and cut into batches; the
    batch order is then shuffled. Every row appears exactly once per epoch.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, generator: torch.Generator, window: int = 64) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size, self.generator, self.window = batch_size, generator, window

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        perm = torch.randperm(len(self.lengths), generator=self.generator).numpy()
        span = self.batch_size * self.window
        batches = []
        for i in range(0, len(perm), span):
            chunk = perm[i : i + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size))
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b].tolist()


class SeqDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data: DataConfig,
        max_len: int,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        vocab: Vocab | None = None,
    ) -> None:
        super().__init__()
        self.data_cfg = data
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.vocab = vocab
        self.events: EventLog | None = None
        self.split: Split | None = None

    def prepare(self) -> SeqDataModule:
        """Load and split once; idempotent. Call before building the model (it needs n_items)."""
        if self.split is None:
            self.events = load_events(self.data_cfg)
            if self.vocab is None:
                self.vocab = Vocab.build(self.events.frame["item"])
            seqs = build_sequences(self.events.frame, self.vocab)
            if self.data_cfg.split == "temporal":
                cfg = self.data_cfg
                self.split = temporal_split(seqs, cfg.split_quantile, cfg.split_valid_quantile)
            else:
                self.split = leave_one_out(seqs)
        return self

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    @property
    def sequences(self) -> Sequences:
        assert self.split is not None, "call prepare() first"
        return self.split.sequences

    def _loader(self, held: HeldOut, train: bool) -> DataLoader:
        items = self.sequences.items
        if train:
            gen = torch.Generator().manual_seed(self.seed)
            lengths = np.minimum(held.end - held.start, self.max_len)
            sampler = LengthBucketBatchSampler(lengths, self.batch_size, gen)
            dataset = _BatchDataset(collate_train, items, held, self.max_len)
        else:
            sampler = BatchSampler(SequentialSampler(range(len(held))), self.eval_batch_size, drop_last=False)
            dataset = _BatchDataset(collate_eval, items, held, self.max_len)
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split.valid, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split.test, train=False)
