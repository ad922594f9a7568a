"""Every config group option composes into valid settings, and every registered name has its
YAML (and every YAML its name)."""


import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fusion_models.fusion import FUSIONS
from fusion_models.task import TASKS
from server.settings import RunSettings
from server.strategies import STRATEGIES, build_strategy
from simulation.cli import CONFIG_DIR
from simulation.config import SimulationConfig
from simulation.datasets import DATASETS
from simulation.partitioners import PARTITIONERS

GROUPS = {
    "fusion": set(FUSIONS.names()),
    "strategy": set(STRATEGIES.names()),
    "data": set(DATASETS.names()),
    "partition": set(PARTITIONERS.names()) | {"auto"},
    "task": set(TASKS.names()) | {"auto"},
}


def _options(group: str) -> set[str]:
    return {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_name_has_its_yaml_and_every_yaml_its_name(group):
    assert _options(group) == GROUPS[group]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize(
    "group, option",
    [(g, o) for g in ("data", "partition", "model", "fusion", "strategy", "privacy", "task") for o in sorted(_options(g))],
)
def test_every_option_composes_into_settings(group, option, tmp_path):
    overrides = [f"{group}={option}", "rounds=1", "num_sites=2"]
    if option == "manifests":
        overrides.append(f"data.dir={tmp_path}")
    config = SimulationConfig.from_cfg(_compose(overrides))
    assert config.run.rounds == 1
    assert config.resolved[group] is not None


def test_manifests_need_a_folder():
    with pytest.raises(Exception, match="dir"):
        SimulationConfig.from_cfg(_compose(["data=manifests"]))


def test_unknown_training_keys_are_refused():
    with pytest.raises(ValueError, match="unknown keys"):
        SimulationConfig.from_cfg(_compose(["+train.nesterov=true"]))


@pytest.mark.parametrize("name", sorted(_options("strategy")))
def test_each_strategy_yaml_reaches_the_strategy_the_server_app_builds(name):
    config = SimulationConfig.from_cfg(_compose([f"strategy={name}", "rounds=1", "num_sites=2"]))
    settings = RunSettings.from_json(config.run.to_json()).strategy  # what the ServerApp reads
    written = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "strategy" / f"{name}.yaml"))
    assert {key: getattr(settings, key) for key in written} == written
    strategy = build_strategy(settings, on_site_metrics=None, num_nodes=4)
    assert type(strategy) is STRATEGIES.get(name)
    for key in set(strategy.hyperparameters) & set(written):
        assert getattr(strategy, key) == written[key], key


def test_a_strategy_override_reaches_the_settings_and_a_bad_one_names_its_key():
    config = SimulationConfig.from_cfg(_compose(["strategy=fedadam", "strategy.server_lr=0.5"]))
    assert config.run.strategy.server_lr == 0.5
    with pytest.raises(ValueError, match=r"strategy.trim_fraction must be a number in \[0, 0.5\)"):
        SimulationConfig.from_cfg(_compose(["strategy=trimmed_mean", "strategy.trim_fraction=0.5"]))
