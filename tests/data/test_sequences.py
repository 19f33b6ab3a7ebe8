import gzip
import json

import numpy as np
import pandas as pd
import pytest

from recsys.data.sequences import EventVocab, build_sequences, read_item_attributes
from recsys.data.vocab import Vocab


def test_event_vocab_is_sorted_round_trips_and_encodes():
    vocab = EventVocab.build(pd.Series(["pv", "buy", "pv", "cart"]))
    assert vocab.names == ("buy", "cart", "pv") and vocab.id("pv") == 3
    assert EventVocab.from_json(vocab.to_json()) == vocab
    assert vocab.encode(np.array(["cart", "pv"])).tolist() == [2, 3]
    with pytest.raises(KeyError, match="fav"):
        vocab.id("fav")
    with pytest.raises(KeyError):
        vocab.encode(np.array(["fav"]))


def test_build_sequences_carries_action_ids_aligned_with_items():
    frame = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"], "timestamp": [1, 2, 3],
                          "event": ["pv", "buy", "pv"]})
    seqs = build_sequences(frame, Vocab.build(frame["item"]), EventVocab.build(frame["event"]))
    assert seqs.items.tolist() == [1, 2, 1] and seqs.events.tolist() == [2, 1, 2]
    assert build_sequences(frame, Vocab.build(frame["item"])).events is None


@pytest.mark.parametrize("gz", [False, True])
def test_item_attributes_follow_the_vocabulary_and_renumber_densely(tmp_path, gz):
    doc = {"10": [7, 3], "11": [3], "99": [5]}  # item 99 is not in the data; item 12 has no entry
    raw = json.dumps(doc).encode()
    path = tmp_path / ("a.json.gz" if gz else "a.json")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    attrs = read_item_attributes(path, Vocab(("11", "12", "10")))
    # attribute ids used by vocabulary items, sorted: 3 -> 1, 7 -> 2 (5 belongs to an unknown item)
    assert attrs.per_item == ((1,), (), (1, 2)) and attrs.n_attrs == 2 and attrs.coverage == 2
