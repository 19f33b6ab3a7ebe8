import pytest

from recsys.config import ExperimentConfig, ModelConfig
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
