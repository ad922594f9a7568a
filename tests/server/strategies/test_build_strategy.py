"""build_strategy: every registered name builds with its settings, and runs Flower's
``Strategy.start`` for two rounds against a grid of hand-made replies."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from client.messages import ARRAYS, METRICS, SITE, SITE_NAME
from server.settings import StrategySettings
from server.strategies import STRATEGIES, build_strategy
from tests.server.strategies.conftest import GLOBAL, IMAGE, STEPS, TABULAR, FakeGrid, as_record

# Values away from every default, so a hyper-parameter that is not passed through shows.
SETTINGS = {
    "fraction_train": 0.5, "fraction_evaluate": 0.25, "min_nodes": 3, "proximal_mu": 0.1, "server_lr": 0.2,
    "momentum": 0.5, "beta_1": 0.6, "beta_2": 0.7, "tau": 0.01, "trim_fraction": 0.3, "num_malicious": 1,
    "num_selected": 2,
}  # fmt: skip


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_name_builds_with_its_settings(name):
    settings = StrategySettings(name=name, **SETTINGS)
    strategy = build_strategy(settings, on_site_metrics=None, num_nodes=2)
    assert type(strategy) is STRATEGIES.get(name)
    assert (strategy.fraction_train, strategy.fraction_evaluate) == (0.5, 0.25)
    assert strategy.min_train_nodes == strategy.min_evaluate_nodes == strategy.min_available_nodes == 2  # capped
    for field in strategy.hyperparameters:
        assert getattr(strategy, field) == getattr(settings, field), field


@pytest.mark.parametrize("name, expected", [("fedavgm", 1.0), ("fedadam", 0.01), ("fedyogi", 0.01), ("fedadagrad", 0.1)])
def test_an_unset_server_lr_takes_the_strategy_default(name, expected):
    assert build_strategy(StrategySettings(name=name), on_site_metrics=None, num_nodes=4).server_lr == expected


def _answer(message: Message) -> Message:
    """Site n sends its copy of the global arrays moved by n + 1; odd sites have no images."""
    site = message.metadata.dst_node_id
    metrics = MetricRecord({"num-examples": 10 * (site + 1), "loss": 1.0 / (site + 1)})
    content = RecordDict({METRICS: metrics, SITE: ConfigRecord({SITE_NAME: f"site{site}"})})
    if message.metadata.message_type == "train":
        arrays = {k: v.numpy() for k, v in message.content[ARRAYS].items()}
        moved = {k: v + (site + 1) for k, v in arrays.items() if k != STEPS and not (k == IMAGE and site % 2)}
        content[ARRAYS] = ArrayRecord({k: torch.from_numpy(np.array(v)) for k, v in moved.items()})
    return Message(content=content, reply_to=message)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_runs_two_rounds_through_flower(name):
    seen = []
    settings = StrategySettings(name=name, proximal_mu=0.1 if name == "fedprox" else 0.0)
    strategy = build_strategy(settings, on_site_metrics=lambda r, kind, site, m: seen.append((r, kind)), num_nodes=5)
    result = strategy.start(grid=FakeGrid(range(5), _answer), initial_arrays=as_record(GLOBAL), num_rounds=2,
                            train_config=ConfigRecord(), evaluate_config=ConfigRecord())  # fmt: skip
    arrays = {k: v.numpy() for k, v in result.arrays.items()}
    assert set(arrays) == set(GLOBAL)
    assert arrays[STEPS] == GLOBAL[STEPS] and arrays[STEPS].shape == ()
    assert np.all(arrays[TABULAR] > GLOBAL[TABULAR])  # every site moved it up
    assert sorted(set(seen)) == [(1, "evaluate"), (1, "train"), (2, "evaluate"), (2, "train")]


def test_an_unknown_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="strategy.name must be one of .*fedadam"):
        StrategySettings(name="fedadm")
