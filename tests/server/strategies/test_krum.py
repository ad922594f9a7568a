"""Krum per module: the chosen site by hand, and the weighted-average fallback when too few
sites sent a module."""

import logging

import numpy as np

from server.strategies import ModalityAwareKrum, aggregate_krum
from server.strategies.multikrum import krum_scores, squared_distances
from tests.server.strategies.conftest import FUSION, GLOBAL, IMAGE, STEPS, TABULAR, f32, reply, run_round

# Five sites send the fusion head; e is an outlier. Squared distances:
#        a    b    c    d    e
#   a    -    1    4    2  200
#   b    1    -    5    1  181
#   c    4    5    -    2  164
#   d    2    1    2    -  162
# With f = 1 each site sums its n - f - 2 = 2 nearest: a 1+2=3, b 1+1=2, c 2+4=6, d 1+2=3,
# e 162+164=326. Krum picks b.
FUSIONS = {"a": f32(0, 0), "b": f32(1, 0), "c": f32(0, 2), "d": f32(1, 1), "e": f32(10, 10)}
# Only a, b and c send the image encoder: 3 <= 2f + 2 = 4, so it falls back to the average.
IMAGES = {"a": f32(0, 3), "b": f32(6, 0), "c": f32(3, 3)}
WEIGHTS = {"a": 10, "b": 20, "c": 30, "d": 40, "e": 50}
SITES = [
    (site, {FUSION: FUSIONS[site], **({IMAGE: IMAGES[site]} if site in IMAGES else {})}, {"num-examples": WEIGHTS[site]})
    for site in FUSIONS
]


def test_scores_and_distances_match_the_hand_table():
    distances = squared_distances([[v] for v in FUSIONS.values()])
    assert distances[0].tolist() == [0, 1, 4, 2, 200] and distances[3, 4] == 162
    assert krum_scores(distances, num_malicious=1).tolist() == [3, 2, 6, 3, 326]


def test_krum_picks_the_site_the_hand_computation_picks(caplog):
    with caplog.at_level(logging.WARNING, logger="flwr"):
        merged = aggregate_krum(GLOBAL, [(a, m) for _, a, m in SITES], num_malicious=1, server_round=7)
    np.testing.assert_array_equal(merged[FUSION], FUSIONS["b"])
    # The image encoder: weighted average of a, b and c, with a warning naming round and module.
    np.testing.assert_allclose(merged[IMAGE], (10 * IMAGES["a"] + 20 * IMAGES["b"] + 30 * IMAGES["c"]) / 60, rtol=1e-6)
    assert any("round 7" in r.getMessage() and "encoders.image" in r.getMessage() for r in caplog.records)
    assert not any("module fusion" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(merged[TABULAR], GLOBAL[TABULAR])
    assert merged[STEPS] == GLOBAL[STEPS]


def test_without_malicious_sites_three_senders_are_enough():
    merged = aggregate_krum(GLOBAL, [(a, m) for _, a, m in SITES], num_malicious=0)
    # f = 0: each sums its 1 (image) nearest; a-c 9, b-c 18, a-b 45: scores a 9, b 18, c 9 -> a.
    np.testing.assert_array_equal(merged[IMAGE], IMAGES["a"])


def test_a_site_that_sent_part_of_a_module_takes_no_part_in_it(caplog):
    two_keys = {**GLOBAL, "fusion.b": f32(0, 0)}
    sites = [({FUSION: v, "fusion.b": v}, {"num-examples": 1}) for v in FUSIONS.values()]
    sites[1] = ({FUSION: FUSIONS["b"]}, {"num-examples": 1})  # b sends no fusion.b
    with caplog.at_level(logging.WARNING, logger="flwr"):
        merged = aggregate_krum(two_keys, sites, num_malicious=0, server_round=2)
    # Without b, n = 4 and f = 0: each sums its 2 nearest over both keys (distances doubled):
    # a 4+8=12, c 4+8=12, d 4+4=8, e 324+328=652 -> d.
    np.testing.assert_array_equal(merged[FUSION], FUSIONS["d"])
    assert any("only part" in r.getMessage() and "[1]" in r.getMessage() for r in caplog.records)


def test_the_flower_class_passes_num_malicious(caplog):
    with caplog.at_level(logging.WARNING, logger="flwr"):
        merged = run_round(ModalityAwareKrum(num_malicious=1), GLOBAL, [reply(*site) for site in SITES], server_round=3)
    np.testing.assert_array_equal(merged[FUSION], FUSIONS["b"])
    np.testing.assert_allclose(merged[IMAGE], (10 * IMAGES["a"] + 20 * IMAGES["b"] + 30 * IMAGES["c"]) / 60, rtol=1e-6)
    assert any("round 3" in r.getMessage() and "encoders.image" in r.getMessage() for r in caplog.records)
