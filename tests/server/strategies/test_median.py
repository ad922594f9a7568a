"""Coordinate-wise median per key over the sites that sent it."""

import numpy as np

from server.strategies import ModalityAwareMedian, aggregate_median
from tests.server.strategies.conftest import FUSION, GLOBAL, IMAGE, STEPS, TABULAR, f32, reply, run_round

# Three sites send the fusion head (one an outlier); only two send the image encoder;
# nobody sends the tabular encoder.
SITES = [
    ("a", {FUSION: f32(1, 10), IMAGE: f32(0, 2), STEPS: np.array(4)}, {"num-examples": 10}),
    ("b", {FUSION: f32(2, -5), IMAGE: f32(4, 4), STEPS: np.array(9)}, {"num-examples": 50}),
    ("c", {FUSION: f32(100, 0)}, {"num-examples": 1000}),
]


def test_median_by_hand_with_a_site_lacking_a_module():
    merged = aggregate_median(GLOBAL, [(a, m) for _, a, m in SITES])
    np.testing.assert_array_equal(merged[FUSION], [2, 0])           # the outlier's 100 and its weight do not pull
    np.testing.assert_array_equal(merged[IMAGE], [2, 3])            # two senders: their mean
    np.testing.assert_array_equal(merged[TABULAR], GLOBAL[TABULAR])  # nobody sent it
    assert merged[STEPS] == 9                                       # counters: the largest weight's value
    assert merged[FUSION].dtype == np.float32


def test_median_matches_numpy_on_random_values():
    rng = np.random.default_rng(0)
    values = [rng.normal(size=2).astype(np.float32) for _ in range(4)]
    merged = aggregate_median(GLOBAL, [({FUSION: v}, {"num-examples": 1}) for v in values])
    np.testing.assert_allclose(merged[FUSION], np.sort(np.stack(values), axis=0)[1:3].mean(axis=0), rtol=1e-6)


def test_the_flower_class_calls_the_median():
    merged = run_round(ModalityAwareMedian(), GLOBAL, [reply(*site) for site in SITES])
    np.testing.assert_array_equal(merged[FUSION], [2, 0])
    np.testing.assert_array_equal(merged[IMAGE], [2, 3])
