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


CENTRAL = {"name": "central_dp"}


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("noise_multiplier", 0.0, r"privacy.noise_multiplier must be a number > 0"),
        ("clipping_norm", -1.0, r"privacy.clipping_norm must be a number > 0"),
        ("clipping", "flat", r"privacy.clipping must be 'fixed' or 'adaptive'"),
        ("target_quantile", 1.0, r"privacy.target_quantile must be a number in \(0, 1\)"),
        ("clip_lr", 0.0, r"privacy.clip_lr must be a number > 0"),
        ("delta", 0.0, r"privacy.delta must be a number in \(0, 1\)"),
        ("clipped_count_stddev", -1.0, r"privacy.clipped_count_stddev must be a number > 0"),
    ],
)
def test_a_bad_central_dp_value_names_its_key(key, value, expected):
    with pytest.raises(ValueError, match=expected):
        RunSettings.from_dict({**RUN, "strategy": {}, "central_privacy": {**CENTRAL, key: value}})


def test_central_dp_is_refused_where_its_guarantee_would_not_hold():
    with pytest.raises(ValueError, match="strategy=median needs each site's update"):
        RunSettings.from_dict({**RUN, "strategy": {"name": "median"}, "central_privacy": CENTRAL})
    with pytest.raises(ValueError, match="cannot run together"):
        RunSettings.from_dict({**RUN, "strategy": {}, "central_privacy": CENTRAL,
                               "privacy": {"name": "dp", "target_epsilon": 8.0}})  # fmt: skip
    with pytest.raises(ValueError, match=r"privacy.delta must be below 1 / num_sites"):
        RunSettings.from_dict({**RUN, "strategy": {}, "central_privacy": {**CENTRAL, "delta": 0.6}})
    with pytest.raises(ValueError, match=r"clipped_count_stddev must be > privacy.noise_multiplier / 2"):
        RunSettings.from_dict({**RUN, "strategy": {}, "central_privacy": {**CENTRAL, "clipping": "adaptive",
                                                                          "clipped_count_stddev": 0.4}})  # fmt: skip


def test_privacy_central_dp_reaches_the_server_and_leaves_the_sites_without_dp_sgd():
    from server.default_config import default_run_settings

    settings = default_run_settings(["privacy=central_dp", "privacy.clipping=adaptive", "strategy=fedadam"])
    assert settings.central_privacy.enabled and settings.central_privacy.clipping == "adaptive"
    assert not settings.privacy.enabled
    assert RunSettings.from_json(settings.to_json()) == settings


@pytest.mark.parametrize("overrides, lr, batch, clip", [
    ([], 0.001, 64, None),
    (["privacy=dp"], 0.012, 256, 0.1),  # the measured DP recipe: configs/privacy/dp.yaml
    (["privacy=dp", "train.lr=0.01", "train.batch_size=32"], 0.01, 32, 0.1),  # explicit values win
    (["privacy=dp", "privacy.lr=0.002", "privacy.batch_size=128"], 0.002, 128, 0.1),
    (["privacy=dp", "data=tcga_brca"], 0.012, 256, 0.1),  # privacy's default before the data set's
    (["data=tcga_brca"], 0.001, 256, None),  # the data set's own default
    (["privacy=central_dp"], 0.001, 64, None),
])  # fmt: skip
def test_privacy_dp_brings_its_own_step_size_batch_and_clipping_default(overrides, lr, batch, clip):
    from server.default_config import default_run_settings

    settings = default_run_settings(overrides)
    assert (settings.train.lr, settings.train.batch_size) == (lr, batch)
    assert (settings.privacy.max_grad_norm if settings.privacy.enabled else None) == clip
    assert RunSettings.from_json(settings.to_json()) == settings


def test_secure_aggregation_is_a_config_group_whose_settings_reach_the_server():
    from server.default_config import default_run_settings

    settings = default_run_settings(["secure_aggregation=secaggplus", "secure_aggregation.clipping_range=2.5"])
    assert settings.secure_aggregation.enabled and settings.secure_aggregation.clipping_range == 2.5
    assert RunSettings.from_json(settings.to_json()) == settings
    assert not default_run_settings([]).secure_aggregation.enabled
    with pytest.raises(ValueError, match="secure_aggregation.*secaggplus"):
        default_run_settings(["secure_aggregation=true"])  # the old boolean: Hydra lists the options


@pytest.mark.parametrize("overrides, epochs", [
    ([], 20.0),  # the measured default: benchmarks/results/federated_utility_finetune20{,_seeds345}
    (["privacy=dp"], 3.0),  # under DP-SGD the passes are in the noise plan: the DP figures' 3
    (["privacy=dp", "personalization.epochs=5"], 5.0),  # an explicit value wins
    (["privacy=dp", "privacy.finetune_epochs=4"], 4.0),
    (["privacy=central_dp"], 20.0),
])  # fmt: skip
def test_privacy_dp_brings_its_own_fine_tuning_passes(overrides, epochs):
    from server.default_config import default_run_settings

    settings = default_run_settings(overrides)
    assert settings.personalization.name == "finetune" and settings.personalization.epochs == epochs
    assert RunSettings.from_json(settings.to_json()) == settings


def test_the_site_optimiser_is_a_train_key_that_reaches_the_server_settings():
    from server.default_config import default_run_settings

    assert default_run_settings([]).train.optimizer == "adamw"
    settings = default_run_settings(["train.optimizer=sgd", "train.momentum=0.5", "train.lr=0.03"])
    assert (settings.train.optimizer, settings.train.momentum, settings.train.lr) == ("sgd", 0.5, 0.03)
    assert RunSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ValueError, match="train.optimizer"):
        default_run_settings(["train.optimizer=adam"])
