"""The run-directory layout: names, states and the bytes of its JSON files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recsys import rundir
from recsys.config import ExperimentConfig
from recsys.errors import ArtifactError


def test_partial_and_final_dirs_are_inverse(tmp_path):
    run = tmp_path / "seed42"
    assert rundir.partial_dir(run) == tmp_path / "seed42.partial"
    assert rundir.is_partial(rundir.partial_dir(run)) and not rundir.is_partial(run)
    assert rundir.final_dir(rundir.partial_dir(run)) == run
    assert rundir.final_dir(run) == run


def test_file_names_are_the_documented_ones():
    assert rundir.STATUS == "status.json" and rundir.CONFIG == "config.yaml" and rundir.METRICS == "metrics.json"
    assert rundir.LAST_CHECKPOINT == Path("checkpoints/last.ckpt")
    assert rundir.BEST_CHECKPOINT == Path("checkpoints/best.ckpt")


def test_status_lifecycle_writes_the_same_json_as_before(tmp_path):
    rundir.mark_running(tmp_path)
    assert (tmp_path / "status.json").read_text() == f'{{\n  "status": "running",\n  "pid": {os.getpid()}\n}}\n'
    assert rundir.running_pid(tmp_path) == os.getpid() and not rundir.is_complete(tmp_path)
    rundir.mark_failed(tmp_path, ValueError("no data"))
    assert rundir.read_status(tmp_path) == {"status": "failed", "error": "ValueError: no data"}
    assert rundir.running_pid(tmp_path) is None
    rundir.mark_interrupted(tmp_path, KeyboardInterrupt("signal 15"))
    assert rundir.read_status(tmp_path) == {"status": "interrupted", "error": "KeyboardInterrupt('signal 15')",
                                            "resumable": True}
    rundir.mark_complete(tmp_path)
    assert rundir.is_complete(tmp_path) and rundir.status_of(tmp_path) == "complete"
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, no leftovers


def test_resumable_needs_an_unfinished_status_and_the_last_checkpoint(tmp_path):
    rundir.mark_interrupted(tmp_path, KeyboardInterrupt())
    assert not rundir.is_resumable(tmp_path)  # no epoch ended yet
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert rundir.is_resumable(tmp_path)
    rundir.mark_running(tmp_path)  # killed outright: still says running
    assert rundir.is_resumable(tmp_path)
    rundir.mark_failed(tmp_path, RuntimeError("boom"))
    assert not rundir.is_resumable(tmp_path)


def test_unreadable_status_is_none(tmp_path):
    assert rundir.read_status(tmp_path) is None
    (tmp_path / "status.json").write_text("[1, 2]")
    assert rundir.read_status(tmp_path) is None and rundir.status_of(tmp_path) is None


def test_require_names_what_is_missing(tmp_path):
    (tmp_path / "config.yaml").write_text("")
    with pytest.raises(ArtifactError, match=r"not a complete run directory: missing metrics.json, checkpoints/best"):
        rundir.require(tmp_path, [rundir.CONFIG, rundir.METRICS, rundir.BEST_CHECKPOINT])
    rundir.require(tmp_path, [rundir.CONFIG])


def test_data_metrics_ranks_and_config_round_trip(tmp_path):
    rundir.write_data(tmp_path, "abc")
    assert (tmp_path / "data.json").read_text() == '{"fingerprint": "abc"}'
    assert rundir.read_fingerprint(tmp_path) == "abc"
    assert not rundir.has_results(tmp_path)
    rundir.write_metrics(tmp_path, {"test": {"ndcg@10": 0.5}})
    assert (tmp_path / "metrics.json").read_text() == '{\n  "test": {\n    "ndcg@10": 0.5\n  }\n}\n'
    rundir.write_ranks(tmp_path, valid=np.array([1, 5]), test=np.array([3, 2, 9]))
    assert rundir.has_results(tmp_path)
    test = rundir.read_ranks(tmp_path, "test")
    assert test.dtype == np.int32 and test.tolist() == [3, 2, 9]
    cfg = ExperimentConfig().with_overrides(["seed=7"])
    rundir.write_config(tmp_path, cfg)
    assert rundir.read_config(tmp_path) == cfg and rundir.stored_config_is(tmp_path, cfg)
    assert not rundir.is_stale(tmp_path, cfg)
    other = cfg.with_overrides(["seed=8"])
    assert rundir.is_stale(tmp_path, other) and not rundir.stored_config_is(tmp_path, other)
    assert rundir.read_event_names(tmp_path) is None


def test_provenance_records_this_packages_own_version():
    import recsys
    from recsys.training.provenance import versions

    recorded = versions()
    # the distribution is recsys-lab, the import name recsys: the version must not read "not installed"
    assert recorded["recsys"] == recsys.__version__ and recorded["recsys"] != "not installed"
    assert recorded["torch"] != "not installed"
