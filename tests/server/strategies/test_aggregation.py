"""Per-module FedAvg as a pure function: weights per module, keys nobody sent kept."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord

from server.strategies import aggregate_modules
from server.strategies.aggregation import average_sent, sent_by_key
from tests.server.strategies.conftest import AVERAGES, FUSION, GLOBAL, IMAGE, ROUNDS, STEPS, TABULAR, f32


def _updates(round_index: int):
    return [(arrays, metrics) for _, arrays, metrics in ROUNDS[round_index]]


def test_each_module_is_averaged_over_the_sites_that_sent_it_with_its_own_counts():
    # alpha: 30 samples, 10 of them with images; beta: 10 samples, no images.
    merged = aggregate_modules(GLOBAL, _updates(0))
    np.testing.assert_allclose(merged[IMAGE], [2, -1])                                 # alpha alone
    np.testing.assert_allclose(merged[TABULAR], [(30 * 1 + 10 * 0) / 40, (30 * 1 + 10 * 3) / 40])
    np.testing.assert_allclose(merged[FUSION], [(30 * 1 + 10 * 3) / 40, (30 * 2 + 10 * 0) / 40])
    assert merged[STEPS] == 5 and merged[STEPS].dtype == np.int64                      # largest weight's counter


def test_per_module_counts_override_the_reply_count():
    # The image count (10) weights the image encoder, not the reply's 30.
    both = [({IMAGE: f32(0, 0)}, {"num-examples": 30, "num-examples.encoders.image": 10}),
            ({IMAGE: f32(4, 8)}, {"num-examples": 30})]  # fmt: skip
    np.testing.assert_allclose(aggregate_modules(GLOBAL, both)[IMAGE], [4 * 30 / 40, 8 * 30 / 40])


def test_keys_nobody_sent_keep_their_global_value():
    merged = aggregate_modules(GLOBAL, _updates(1))
    np.testing.assert_array_equal(merged[IMAGE], GLOBAL[IMAGE])
    assert merged[STEPS] == GLOBAL[STEPS]


def test_a_module_weighted_zero_counts_as_not_sent():
    update = ({IMAGE: f32(5, 5)}, {"num-examples": 10, "num-examples.encoders.image": 0})
    np.testing.assert_array_equal(aggregate_modules(GLOBAL, [update])[IMAGE], GLOBAL[IMAGE])
    assert IMAGE not in sent_by_key(GLOBAL, [update])


def test_average_sent_holds_only_the_keys_someone_sent():
    assert set(average_sent(GLOBAL, _updates(1))) == {TABULAR, FUSION}
    for key, value in average_sent(GLOBAL, _updates(0)).items():
        np.testing.assert_allclose(value, AVERAGES[0][key], rtol=1e-6)


@pytest.mark.parametrize("weights", [(1, 1), (3, 1), (1, 9)])
def test_weighted_mean_matches_numpy(weights):
    updates = [({FUSION: f32(i, -i)}, {"num-examples": w}) for i, w in enumerate(weights)]
    merged = aggregate_modules(GLOBAL, updates)
    np.testing.assert_allclose(merged[FUSION], [np.average([0, 1], weights=weights), np.average([0, -1], weights=weights)], rtol=1e-6)


def test_flower_records_give_the_same_result_as_numpy_dicts():
    records = [
        (ArrayRecord({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}), MetricRecord(metrics))
        for arrays, metrics in _updates(0)
    ]
    from_records, from_numpy = aggregate_modules(GLOBAL, records), aggregate_modules(GLOBAL, _updates(0))
    for key in GLOBAL:
        np.testing.assert_array_equal(from_records[key], from_numpy[key])
