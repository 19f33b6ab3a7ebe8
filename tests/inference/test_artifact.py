"""Artifact round trip, atomic writes, and refusal of anything that would unpickle."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import numpy as np
import pytest
import torch

from recsys.errors import ArtifactError
from recsys.inference import Recommender, load_artifact, random_artifact, save_artifact
from recsys.inference.artifact import FORMAT_VERSION, MANIFEST, WEIGHTS

from .conftest import SMALL_MODEL


def test_save_load_round_trip_keeps_every_part(tmp_path):
    art = random_artifact(20, SMALL_MODEL, seed=4)
    art = dataclasses.replace(art, metrics={"test": {"ndcg@10": 0.5}}, dataset={"fingerprint": "ab" * 32})
    out = save_artifact(art, tmp_path / "a")
    assert sorted(os.listdir(out)) == [MANIFEST, WEIGHTS]
    back = load_artifact(out)
    assert back.model == art.model and back.vocab == art.vocab
    assert back.state_dict.keys() == art.state_dict.keys()
    for key, value in art.state_dict.items():
        assert torch.equal(back.state_dict[key], value), key
    np.testing.assert_array_equal(back.item_counts, art.item_counts)
    assert back.metrics == {"test": {"ndcg@10": 0.5}} and back.dataset["fingerprint"] == "ab" * 32
    doc = json.loads((out / MANIFEST).read_text())
    assert doc["format_version"] == FORMAT_VERSION and doc["recsys_version"] == back.recsys_version != ""
    assert doc["vocab"]["items"][:3] == ["i0", "i1", "i2"] and doc["vocab"]["mask_id"] == 21


def test_writes_are_atomic_and_never_clobber(tmp_path, monkeypatch):
    art = random_artifact(10, SMALL_MODEL)
    out = save_artifact(art, tmp_path / "a")
    with pytest.raises(FileExistsError):
        save_artifact(art, out)
    # A failure half-way leaves neither a partial folder nor a damaged old artifact.
    import recsys.inference.artifact as module

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module, "_dump_manifest", boom)
    with pytest.raises(OSError, match="disk full"):
        save_artifact(random_artifact(10, SMALL_MODEL, seed=9), out, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["a"]
    assert torch.equal(load_artifact(out).state_dict["item_emb.weight"], art.state_dict["item_emb.weight"])
    monkeypatch.undo()
    other = random_artifact(10, SMALL_MODEL, seed=9)
    save_artifact(other, out, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["a"]
    assert torch.equal(load_artifact(out).state_dict["item_emb.weight"], other.state_dict["item_emb.weight"])


class _Exploit:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_named_as_artifact_is_refused(tmp_path, small_artifact):
    marker = tmp_path / "pwned"
    # 1. a pickle passed as the artifact path
    evil = tmp_path / "model.pkl"
    evil.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ArtifactError, match="never unpickles"):
        Recommender.load(evil)
    # 2. a torch.save file (zip + pickle) passed as the artifact path
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "x": _Exploit(marker)}, ckpt)
    with pytest.raises(ArtifactError, match="never unpickles"):
        Recommender.load(ckpt)
    # 3. an artifact folder whose weights file is really a pickle
    folder = tmp_path / "art"
    folder.mkdir()
    (folder / MANIFEST).write_text((small_artifact / MANIFEST).read_text())
    (folder / WEIGHTS).write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ArtifactError, match="never unpickles"):
        Recommender.load(folder)
    # 4. ...or a torch.save zip under the safetensors name
    torch.save({"x": _Exploit(marker)}, folder / WEIGHTS)
    with pytest.raises(ArtifactError, match="never unpickles"):
        Recommender.load(folder)
    assert not marker.exists()


def test_malformed_artifacts_fail_with_artifact_error(tmp_path, small_artifact):
    def copy(name):
        dst = tmp_path / name
        dst.mkdir()
        for f in (MANIFEST, WEIGHTS):
            (dst / f).write_bytes((small_artifact / f).read_bytes())
        return dst

    with pytest.raises(ArtifactError, match="no such artifact"):
        load_artifact(tmp_path / "missing")
    missing = copy("no-weights")
    (missing / WEIGHTS).unlink()
    with pytest.raises(ArtifactError, match=f"missing {WEIGHTS}"):
        load_artifact(missing)
    future = copy("future")
    doc = json.loads((future / MANIFEST).read_text())
    doc["format_version"] = FORMAT_VERSION + 1
    (future / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="format_version"):
        load_artifact(future)
    garbage = copy("garbage")
    (garbage / WEIGHTS).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ArtifactError, match="safetensors"):
        load_artifact(garbage)
    wrong = copy("wrong-shape")
    doc = json.loads((wrong / MANIFEST).read_text())
    doc["model"]["dim"] = 32
    (wrong / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="do not fit"):
        load_artifact(wrong)
    counts = copy("bad-counts")
    doc = json.loads((counts / MANIFEST).read_text())
    doc["item_counts"] = doc["item_counts"][:-1]
    (counts / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="item_counts"):
        load_artifact(counts)


def test_safetensors_whose_header_length_opens_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """safetensors opens with its JSON header's length: 0x0d80 bytes starts with the pickle
    PROTO byte 0x80 (a BSARec artifact had this header), yet it is no pickle."""
    from safetensors.torch import load_file, save_file

    from recsys.inference.artifact import _refuse_pickle

    path = tmp_path / WEIGHTS
    for pad in range(256):  # metadata of growing length until the header length's low byte is 0x80
        save_file({"w": torch.ones(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[:1] == b"\x80"
    _refuse_pickle(path)  # no error
    assert torch.equal(load_file(str(path))["w"], torch.ones(2))
