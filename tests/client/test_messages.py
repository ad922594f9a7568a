"""The one message contract: round configs travel and come back unchanged."""

import pytest

from client import messages as keys
from client.messages import RoundConfig
from client.settings import PersonalizationSettings, TrainSettings


def test_round_config_round_trips_through_a_config_record():
    config = RoundConfig(task="binary", feature_spec="{}", model_spec="{}", seed=3, device="cpu",
                         train=TrainSettings(epochs=0.5, label_skew="logit_adjust", optimizer="sgd", momentum=0.5), split="test", bootstrap=7,
                         personalization=PersonalizationSettings(name="finetune", epochs=2.0))  # fmt: skip
    record = config.to_record(**{keys.SERVER_ROUND: 4})
    assert record["train.label-skew"] == "logit_adjust" and record[keys.SERVER_ROUND] == 4
    assert record["train.optimizer"] == "sgd" and record["train.momentum"] == 0.5
    assert RoundConfig.from_record(record) == config


def test_a_missing_key_is_named():
    record = RoundConfig(task="binary", feature_spec="{}", model_spec="{}", seed=0, device="cpu",
                         train=TrainSettings()).to_record()  # fmt: skip
    del record["train.lr"]
    with pytest.raises(ValueError, match="train.lr"):
        RoundConfig.from_record(record)


def test_module_weight_key():
    assert keys.module_weight_key("encoders.image") == "num-examples.encoders.image"
