from pathlib import Path

import pytest
import yaml

from recsys.config import LEGACY_VALUES, ExperimentConfig, ModelConfig
from recsys.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    cfg = ExperimentConfig().with_overrides(["train.lr=0.003", "eval.ks=[5,10]", "eval.monitor=hr@5",
                                            "data.event_col=type"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    back = ExperimentConfig.from_yaml(path)
    assert back == cfg
    assert back.train.lr == 0.003 and back.eval.ks == (5, 10) and back.data.event_col == "type"


def test_unknown_keys_and_bad_types_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="model.dimension"):
        ExperimentConfig.from_dict({"model": {"dimension": 3}})
    with pytest.raises(ConfigError, match="train.lr must be a number"):
        ExperimentConfig.from_dict({"train": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="unknown key"):
        ExperimentConfig().with_overrides(["train.learning_rate=1"])
    with pytest.raises(ConfigError, match="monitor"):
        ExperimentConfig().with_overrides(["eval.monitor=ndcg@7"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  dim: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+"):
        ExperimentConfig.from_yaml(bad)


def test_experiment_configs_load():
    from pathlib import Path

    configs = sorted(Path(__file__).resolve().parents[1].glob("experiments/*/*.yaml"))
    assert configs
    for path in configs:
        cfg = ExperimentConfig.from_yaml(path)
        assert isinstance(cfg.model, ModelConfig)


# A run directory's config.yaml written by an early version (S3-Rec Beauty sasrec-ce, seed 43,
# from benchmarks/results): it lacks every field added since.
STORED_V0 = Path(__file__).parent / "fixtures" / "stored_config_v0.yaml"


def test_a_stored_config_reads_fields_it_lacks_with_their_legacy_values():
    from recsys.report.results import config_hash

    stored = ExperimentConfig.from_yaml(STORED_V0, stored=True)
    frozen = ExperimentConfig.from_yaml(Path(__file__).parents[1] / "experiments/s3rec-beauty/sasrec-ce.yaml")
    frozen = frozen.with_overrides(["seed=43"])
    # the run had the behaviour of its time: no transition head, whole batches, fp32
    assert stored.model.transition_lags == 0 and stored.train.length_groups == 1
    assert stored.model.dropout_sampler == "bernoulli" and stored.train.encoder_precision == "fp32"
    assert config_hash(stored) == config_hash(frozen)  # so the finished run is not stale
    # read with today's defaults instead, the same file would describe another experiment
    assert config_hash(ExperimentConfig.from_yaml(STORED_V0)) != config_hash(frozen)


def test_every_field_added_since_the_first_results_declares_its_legacy_value():
    from recsys.report.results import COSMETIC

    def fields(doc):
        return {(s, k) for s, v in doc.items() if isinstance(v, dict) for k in v}

    old = fields(yaml.safe_load(STORED_V0.read_text(encoding="utf-8")))
    added = fields(ExperimentConfig().to_dict()) - old
    missing = {f for f in added if f not in LEGACY_VALUES and f not in COSMETIC}
    assert not missing, f"add these fields to recsys.config.LEGACY_VALUES (the value before they existed): {missing}"


def test_settings_the_config_does_not_read_leave_the_hash_alone():
    from recsys.report.results import config_hash

    base = ExperimentConfig().with_overrides(["model.transition_lags=0", "train.loss=ce"])
    assert config_hash(base.with_overrides(["model.transition_em=2", "train.chunk_size=64"])) == config_hash(base)
    head = base.with_overrides(["model.transition_lags=2"])
    assert config_hash(head.with_overrides(["model.transition_em=2"])) != config_hash(head)
    chunked = base.with_overrides(["train.loss=ce_chunked"])
    assert config_hash(chunked.with_overrides(["train.chunk_size=64"])) != config_hash(chunked)
    whole = base.with_overrides(["train.length_groups=1"])
    assert config_hash(whole.with_overrides(["train.length_bucket=1"])) == config_hash(whole)
    grouped = base.with_overrides(["train.length_groups=4"])
    assert config_hash(grouped.with_overrides(["train.length_bucket=1"])) != config_hash(grouped)


def test_block_models_ask_the_spec_not_the_name():
    """The new causal models get what sasrec gets (the head by default, action tokens) and
    bert4rec keeps its refusals; BSARec's options are checked; other blocks' options leave
    the result hash alone."""
    from recsys.report.results import config_hash

    for name in ("sasrec", "bsarec", "hstu", "ligr"):
        cfg = ExperimentConfig().with_overrides([f"model.name={name}"])
        assert cfg.model.transition_lags == 3, name
        ExperimentConfig().with_overrides([f"model.name={name}", "data.event_col=action"])  # allowed
    assert ExperimentConfig().with_overrides(["model.name=bert4rec"]).model.transition_lags == 0
    with pytest.raises(ConfigError, match="causal encoders only"):
        ExperimentConfig().with_overrides(["model.name=bert4rec", "data.event_col=action"])
    with pytest.raises(ConfigError, match="needs a causal encoder"):
        ExperimentConfig().with_overrides(["model.name=bert4rec", "model.transition_lags=2"])
    with pytest.raises(ConfigError, match="bsarec_alpha"):
        ExperimentConfig().with_overrides(["model.name=bsarec", "model.bsarec_alpha=1.5"])
    with pytest.raises(ConfigError, match="bsarec_c"):
        ExperimentConfig().with_overrides(["model.name=bsarec", "model.max_len=10", "model.bsarec_c=10"])
    ExperimentConfig().with_overrides(["model.max_len=10", "model.bsarec_c=10"])  # sasrec never reads it
    sasrec = ExperimentConfig()
    assert config_hash(sasrec.with_overrides(["model.bsarec_alpha=0.3"])) == config_hash(sasrec)
    bsarec = sasrec.with_overrides(["model.name=bsarec"])
    assert config_hash(bsarec.with_overrides(["model.bsarec_alpha=0.3"])) != config_hash(bsarec)
