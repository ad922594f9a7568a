"""Multi-Krum per module: the unweighted mean of the m sites with the best Krum scores."""

import logging

import numpy as np
import pytest

from server.strategies import ModalityAwareMultiKrum, aggregate_multikrum
from tests.server.strategies.conftest import FUSION, GLOBAL, IMAGE, reply, run_round
from tests.server.strategies.test_krum import FUSIONS, IMAGES, SITES


def _updates():
    return [(a, m) for _, a, m in SITES]


def test_multikrum_averages_the_m_chosen_sites():
    merged = aggregate_multikrum(GLOBAL, _updates(), num_malicious=1, num_selected=3)
    # Scores (see test_krum): b 2, a 3, d 3, c 6, e 326 -> b, a, d, averaged without weights.
    np.testing.assert_allclose(merged[FUSION], (FUSIONS["a"] + FUSIONS["b"] + FUSIONS["d"]) / 3, rtol=1e-6)


def test_num_selected_zero_takes_n_minus_f():
    merged = aggregate_multikrum(GLOBAL, _updates(), num_malicious=1, num_selected=0)
    # n - f = 4: every site but the outlier e.
    np.testing.assert_allclose(merged[FUSION], np.mean([FUSIONS[s] for s in "abcd"], axis=0), rtol=1e-6)


def test_num_selected_above_n_minus_f_is_lowered_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="flwr"):
        merged = aggregate_multikrum(GLOBAL, _updates(), num_malicious=1, num_selected=5, server_round=4)
    np.testing.assert_allclose(merged[FUSION], np.mean([FUSIONS[s] for s in "abcd"], axis=0), rtol=1e-6)
    assert any("round 4" in r.getMessage() and "num_selected" in r.getMessage() for r in caplog.records)


def test_too_few_senders_fall_back_to_the_weighted_average(caplog):
    with caplog.at_level(logging.WARNING, logger="flwr"):
        merged = aggregate_multikrum(GLOBAL, _updates(), num_malicious=1, num_selected=2, server_round=9)
    np.testing.assert_allclose(merged[IMAGE], (10 * IMAGES["a"] + 20 * IMAGES["b"] + 30 * IMAGES["c"]) / 60, rtol=1e-6)
    assert any("round 9" in r.getMessage() and "encoders.image" in r.getMessage() for r in caplog.records)


def test_negative_settings_are_refused():
    with pytest.raises(ValueError, match="num_malicious"):
        aggregate_multikrum(GLOBAL, _updates(), num_malicious=-1, num_selected=1)


def test_the_flower_class_passes_its_settings():
    strategy = ModalityAwareMultiKrum(num_malicious=1, num_selected=3)
    merged = run_round(strategy, GLOBAL, [reply(*site) for site in SITES])
    np.testing.assert_allclose(merged[FUSION], (FUSIONS["a"] + FUSIONS["b"] + FUSIONS["d"]) / 3, rtol=1e-6)
