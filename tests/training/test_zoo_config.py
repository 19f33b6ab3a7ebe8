"""Config validation of the zoo's fields: mistakes fail when the config loads, with a message."""

import pytest

from recsys.config import ExperimentConfig
from recsys.errors import ConfigError

EVENTS = ["data.format=csv", "data.event_col=behavior"]


@pytest.mark.parametrize("overrides, message", [
    (["train.loss=softmax"], "train.loss must be one of"),
    (["train.sampler=hard"], "train.sampler must be one of"),
    (["train.loss=gbce", "train.sampler=popularity"], "calibration assumes uniform"),
    (["train.gbce_t=1.5"], "gbce_t"),
    (["train.negatives_per=user"], "train.negatives_per must be one of"),
    (["train.mask_prob=0"], "mask_prob"),
    (["model.name=gru4rec"], "model.name must be one of"),
    (["model.name=bert4rec", *EVENTS], "causal encoders only"),
    (["train.purchase_horizon=3"], "needs data.event_col"),
    (["eval.monitor=action_nll"], "needs data.event_col"),
    (["eval.monitor=action_f1", *EVENTS], "eval.monitor must be"),
])
def test_bad_zoo_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig().with_overrides(overrides)


def test_good_zoo_settings_load():
    cfg = ExperimentConfig().with_overrides([*EVENTS, "eval.monitor=action_nll", "train.purchase_horizon=5",
                                             "train.loss=sampled", "train.sampler=in_batch"])
    assert cfg.eval.monitor == "action_nll" and cfg.train.purchase_horizon == 5
