"""StrategySettings: every hyper-parameter is checked, and the error names the key and range."""

import pytest

from server.settings import RunSettings, StrategySettings

RUN = {"rounds": 1, "seed": 0, "task": "binary", "num_sites": 2, "train": {}, "model": {}}


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("server_lr", -0.1, r"strategy.server_lr must be a number > 0"),
        ("server_lr", 0.0, r"strategy.server_lr must be a number > 0"),
        ("server_lr", "0.1", r"strategy.server_lr must be a number > 0"),
        ("momentum", 1.0, r"strategy.momentum must be a number in \[0, 1\)"),
        ("beta_1", -0.1, r"strategy.beta_1 must be a number in \[0, 1\)"),
        ("beta_2", 1.0, r"strategy.beta_2 must be a number in \[0, 1\)"),
        ("tau", 0.0, r"strategy.tau must be a number > 0"),
        ("trim_fraction", 0.5, r"strategy.trim_fraction must be a number in \[0, 0.5\)"),
        ("num_malicious", -1, r"strategy.num_malicious must be an integer >= 0"),
        ("num_selected", 1.5, r"strategy.num_selected must be an integer >= 0"),
        ("fraction_train", 1.5, r"strategy.fraction_train must be a number in \[0, 1\]"),
        ("min_nodes", 0, r"strategy.min_nodes must be an integer >= 1"),
        ("proximal_mu", -1.0, r"strategy.proximal_mu must be a number >= 0"),
    ],
)
def test_a_bad_value_names_its_key_and_range(key, value, expected):
    with pytest.raises(ValueError, match=expected):
        StrategySettings(**{key: value})
    with pytest.raises(ValueError, match=expected):
        RunSettings.from_dict({**RUN, "strategy": {"name": "fedavg", key: value}})


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError, match="beta_1.*tau"):
        StrategySettings(beta_1=2.0, tau=-1.0)


def test_unknown_keys_are_refused():
    with pytest.raises(ValueError, match=r"unknown keys \['serverlr'\]"):
        RunSettings.from_dict({**RUN, "strategy": {"name": "fedadam", "serverlr": 0.1}})


def test_the_new_fields_survive_the_json_that_reaches_the_server_app():
    strategy = {"name": "multikrum", "server_lr": 0.3, "num_malicious": 1, "num_selected": 2, "trim_fraction": 0.2}
    settings = RunSettings.from_dict({**RUN, "strategy": strategy})
    assert RunSettings.from_json(settings.to_json()).strategy == settings.strategy == StrategySettings(**strategy)
