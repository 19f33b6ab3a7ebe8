"""Search-space files: what a valid space gives, and a clear error for each malformed one."""

import textwrap

import optuna
import pytest

from recsys.cli import main
from recsys.config import ExperimentConfig
from recsys.errors import ConfigError
from recsys.tuning.space import apply_values, load_space

BASE = ExperimentConfig().with_overrides(["model.n_heads=2"])

GOOD = """\
params:
  model.dropout: {type: float, low: 0.1, high: 0.6}
  train.lr: {type: float, low: 1e-4, high: 1.0e-2, log: true}
  model.n_blocks: {type: int, low: 1, high: 3}
  model.dim: {type: categorical, choices: [64, 128]}
  train.weight_decay: {type: float, low: 0.0, high: 0.1, step: 0.05}
fixed:
  train.max_epochs: 30
  train.patience: 5
sampler: {seed: 3, n_startup_trials: 4}
pruner: {type: hyperband, min_resource: 2, reduction_factor: 3}
"""


def _write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_valid_space_parses_and_builds_trial_configs(tmp_path):
    space = load_space(_write(tmp_path, GOOD), BASE)
    assert [p.key for p in space.params] == ["model.dropout", "train.lr", "model.n_blocks", "model.dim",
                                             "train.weight_decay"]
    lr = space.params[1]
    assert (lr.type, lr.low, lr.high, lr.log) == ("float", 1e-4, 1e-2, True)  # "1e-4" (a YAML 1.1 string) accepted
    assert space.params[3].choices == (64, 128)
    assert space.fixed == {"train.max_epochs": 30, "train.patience": 5}
    assert (space.seed, space.n_startup_trials) == (3, 4)
    assert space.pruner == {"type": "hyperband", "min_resource": 2, "reduction_factor": 3}

    trial = optuna.trial.FixedTrial({"model.dropout": 0.25, "train.lr": 0.003, "model.n_blocks": 3,
                                     "model.dim": 128, "train.weight_decay": 0.05})
    params = space.suggest(trial)
    cfg = space.config_for(BASE, params)
    assert (cfg.model.dropout, cfg.train.lr, cfg.model.n_blocks, cfg.model.dim) == (0.25, 0.003, 3, 128)
    assert (cfg.train.weight_decay, cfg.train.max_epochs, cfg.train.patience) == (0.05, 30, 5)
    assert cfg.model.n_heads == 2 and cfg.seed == BASE.seed  # everything else from the base
    # the canonical form is stable (it identifies the study on resume)
    assert load_space(_write(tmp_path, GOOD, "again.yaml"), BASE).digest() == space.digest()


def test_apply_values_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="model.depth: not a config key"):
        apply_values(BASE, {"model.depth": 3})
    with pytest.raises(ConfigError, match="not a config key"):
        apply_values(BASE, {"model": 3})


BAD = [
    # (space text, expected line, expected message fragment)
    ("params:\n  model.dropout: {type: float, low: 0.6, high: 0.1}\n", 2, "params: model.dropout: low must be < high"),
    ("params:\n  model.drop: {type: float, low: 0.1, high: 0.6}\n", 2,
     "params: model.drop is not a config key (use section.key, e.g. model.dropout); keys of model: "),
    ("params:\n  dropout: {type: float, low: 0.1, high: 0.6}\n", 2, "params: dropout is not a config key"),
    ("params:\n  model.dropout: {type: uniform, low: 0.1, high: 0.6}\n", 2,
     "params: model.dropout: type must be one of float, int, categorical, got 'uniform'"),
    ("params:\n  train.lr: {type: logfloat, low: 0.1, high: 0.6}\n", 2, "log-uniform: type: float with log: true"),
    ("params:\n  train.lr: {type: float, low: 0.0, high: 0.1, log: true}\n", 2, "a log range needs low > 0"),
    ("params:\n  model.n_blocks: {type: int, low: 1.5, high: 3}\n", 2, "model.n_blocks: low must be an integer"),
    ("params:\n  model.dim: {type: categorical, choices: []}\n", 2, "choices must be a non-empty list"),
    ("params:\n  model.dim:\n    type: categorical\n    choices: [64, 65]\n", 4,
     "model.dim: choice 65 gives an invalid config: model.dim must be divisible by model.n_heads"),
    ("params:\n  model.dropout: {type: float, low: 0.1, high: 1.5}\n", 2,
     "model.dropout: high=1.5 gives an invalid config: model.dropout must be in [0, 1)"),
    ("params:\n  model.dim: {type: float, low: 16, high: 64}\n", 2, "model.dim: low=16.0 gives an invalid config"),
    ("params:\n  model.dropout: {type: float, low: 0.1}\n", 2, "model.dropout: type float needs high"),
    ("params:\n  model.dropout: {type: float, low: 0.1, high: 0.6, scale: 2}\n", 2, "unknown field 'scale'"),
    ("params:\n  model.dropout: 0.3\n", 2, "params: model.dropout must be a mapping like"),
    ("params:\n  model.dropout: {type: float, low: 0.1, high: 0.6}\n  model.dropout: {type: float, low: 0.2, high: 0.6}\n",
     3, "params: model.dropout appears twice (first on line 2)"),
    ("params: {}\n", 1, "params: is empty"),
    ("params:\n  train.lr: {type: float, low: 0.001, high: 0.01}\nfixed:\n  train.lr: 0.002\n", 4,
     "fixed: train.lr is also searched in params"),
    ("params:\n  train.lr: {type: float, low: 0.001, high: 0.01}\nfixed:\n  train.max_epochs: many\n", 4,
     "fixed: train.max_epochs gives an invalid config: train.max_epochs must be an integer"),
    ("params:\n  train.lr: {type: float, low: 0.001, high: 0.01}\npruner: {type: percentile}\n", 3,
     "pruner: type must be one of median, hyperband, none"),
    ("params:\n  train.lr: {type: float, low: 0.001, high: 0.01}\npruner: {type: median, patience: 3}\n", 3,
     "pruner (median): unknown field 'patience'"),
    ("params:\n  train.lr: {type: float, low: 0.001, high: 0.01}\nsampler: {seed: -1}\n", 3,
     "sampler: seed must be an integer >= 0"),
    ("params:\n  train.lr: {type: float, low: 0.001, high: 0.01}\nsearch: {}\n", 3, "unknown section 'search'"),
    ("params:\n  train.lr: {type: float, low: 0.001, high: 0.01\n", 3, "invalid YAML"),
]


@pytest.mark.parametrize("text,line,fragment", BAD, ids=[b[2][:40] for b in BAD])
def test_a_malformed_space_is_rejected_naming_file_line_and_key(tmp_path, text, line, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_space(path, BASE)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}"), message
    assert fragment in message, message


def test_missing_empty_or_sectionless_files(tmp_path):
    with pytest.raises(ConfigError, match="search space file not found"):
        load_space(tmp_path / "nope.yaml", BASE)
    with pytest.raises(ConfigError, match="empty search space file"):
        load_space(_write(tmp_path, ""), BASE)
    with pytest.raises(ConfigError, match="no params: section"):
        load_space(_write(tmp_path, "fixed: {train.lr: 0.01}\n"), BASE)


def test_the_cli_reports_a_malformed_space_before_any_trial(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(f"name: x\noutput_dir: {tmp_path / 'runs'}\n")
    space = _write(tmp_path, "params:\n  model.dropout: {type: float, low: 0.6, high: 0.1}\n")
    assert main(["tune", "--config", str(config), "--space", str(space), "--trials", "2"]) == 2
    err = capsys.readouterr().err
    assert f"recsys: error: {space}:2: params: model.dropout: low must be < high" in err
    assert not (tmp_path / "runs").exists()  # nothing created, no study, no trial
    assert main(["tune", "--config", str(config), "--space", str(_write(tmp_path, GOOD, "g.yaml"))]) == 2
    assert "needs --trials N or --timeout SECONDS" in capsys.readouterr().err
