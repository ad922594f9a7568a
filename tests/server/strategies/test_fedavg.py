"""The Flower class path of modality-aware FedAvg: replies in, per-module average out."""

import numpy as np

from server.strategies import STRATEGIES, ModalityAwareFedAvg, aggregate_modules
from tests.server.strategies.conftest import (
    AVERAGES,
    FUSION,
    GLOBAL,
    IMAGE,
    ROUNDS,
    STEPS,
    TABULAR,
    f32,
    reply,
    run_round,
    run_rounds,
)


def test_configure_then_aggregate_gives_the_per_module_average_over_two_rounds():
    after_1, after_2 = run_rounds(ModalityAwareFedAvg(), GLOBAL)
    for key in (IMAGE, TABULAR, FUSION):
        np.testing.assert_allclose(after_1[key], AVERAGES[0][key], rtol=1e-6)
    np.testing.assert_allclose(after_2[TABULAR], AVERAGES[1][TABULAR], rtol=1e-6)
    np.testing.assert_array_equal(after_2[IMAGE], after_1[IMAGE])      # nobody sent it in round 2
    assert after_2[STEPS].shape == () and after_2[STEPS] == 5          # a 0-d buffer stays 0-d


def test_the_class_returns_what_the_pure_function_returns():
    merged = run_round(ModalityAwareFedAvg(), GLOBAL, [reply(*site) for site in ROUNDS[0]])
    expected = aggregate_modules(GLOBAL, [(a, m) for _, a, m in ROUNDS[0]])
    assert set(merged) == set(GLOBAL)
    for key in GLOBAL:
        np.testing.assert_array_equal(merged[key], expected[key])


def test_fedprox_aggregates_like_fedavg():
    assert STRATEGIES.get("fedprox") is ModalityAwareFedAvg


def test_nonfinite_replies_are_dropped_and_good_ones_recorded():
    seen = []
    strategy = ModalityAwareFedAvg(on_site_metrics=lambda r, kind, site, m: seen.append((r, kind, site)))
    good = reply("good", {FUSION: f32(2, 2)}, {"num-examples": 5})
    bad = reply("bad", {FUSION: f32(np.nan, 0)}, {"num-examples": 5})
    merged = run_round(strategy, GLOBAL, [good, bad])
    np.testing.assert_allclose(merged[FUSION], [2, 2])
    assert seen == [(1, "train", "good")]


def test_replies_with_unknown_keys_are_ignored():
    odd = reply("odd", {"encoders.audio.w": f32(1, 1)}, {"num-examples": 5})
    good = reply("good", {FUSION: f32(4, 4)}, {"num-examples": 5})
    assert run_round(ModalityAwareFedAvg(), GLOBAL, [odd]) is None
    np.testing.assert_allclose(run_round(ModalityAwareFedAvg(), GLOBAL, [odd, good])[FUSION], [4, 4])


def test_the_average_does_not_depend_on_the_order_replies_arrive_in():
    """Float sums depend on their order; replies arrive in an order that varies between runs,
    so the strategy aggregates in site order and a rerun gives the same bits."""
    big = 1e17  # (big + 1) - big is 0 in float64, big - big + 1 is 1
    sites = [("alpha", {FUSION: f32(big, 0.0)}, {"num-examples": 10}),
             ("beta", {FUSION: f32(1.0, 0.0)}, {"num-examples": 10}),
             ("gamma", {FUSION: f32(-big, 0.0)}, {"num-examples": 10})]  # fmt: skip
    orders = [[0, 1, 2], [0, 2, 1], [2, 1, 0], [1, 0, 2]]
    merged = [run_round(ModalityAwareFedAvg(), GLOBAL, [reply(*sites[i]) for i in order])[FUSION] for order in orders]
    for other in merged[1:]:
        np.testing.assert_array_equal(other, merged[0])
