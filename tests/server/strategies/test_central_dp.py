"""Client-level DP on the server: clipping over the modules a site sent, noise of std z C / n
on every floating coordinate, the fixed-denominator unweighted mean, Andrew et al.'s update of
C, Poisson sampling, and the wrapper around the per-module rules."""

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord

from server.strategies import ModalityAwareFedAdam, ModalityAwareFedAvg, ModalityAwareKrum, ModalityAwareMedian
from server.strategies.central_dp import (
    CentralDPStrategy,
    adaptive_clipping_norm,
    clip_update,
    default_count_stddev,
    noisy_mean,
    poisson_sample,
    update_noise_multiplier,
)
from tests.server.strategies.conftest import (
    FUSION,
    GLOBAL,
    IMAGE,
    STEPS,
    TABULAR,
    FakeGrid,
    as_record,
    f32,
    reply,
    run_round,
)


def _norm(delta):
    return math.sqrt(sum(float(np.sum(v**2)) for v in delta.values()))


def test_an_update_above_c_is_scaled_to_exactly_c_over_every_module_it_sent():
    # delta: image (3, 0), tabular (0, 4), fusion (0, 0): norm 5 over the concatenation
    arrays = {IMAGE: GLOBAL[IMAGE] + f32(3, 0), TABULAR: GLOBAL[TABULAR] + f32(0, 4), FUSION: GLOBAL[FUSION], STEPS: np.array(9)}
    update = clip_update(GLOBAL, arrays, {"num-examples": 10}, clipping_norm=2.0)
    assert update.norm == pytest.approx(5.0) and update.clipped
    assert _norm(update.delta) == pytest.approx(2.0)
    np.testing.assert_allclose(update.delta[IMAGE], [1.2, 0.0])  # scaled by 2 / 5, direction kept
    np.testing.assert_allclose(update.delta[TABULAR], [0.0, 1.6])
    assert STEPS not in update.delta, "an integer counter is never part of the update"


def test_an_update_below_c_is_unchanged():
    arrays = {TABULAR: GLOBAL[TABULAR] + f32(0.3, -0.4)}
    update = clip_update(GLOBAL, arrays, {"num-examples": 10}, clipping_norm=1.0)
    assert not update.clipped and update.norm == pytest.approx(0.5)
    np.testing.assert_allclose(update.delta[TABULAR], [0.3, -0.4], rtol=1e-6)


def test_a_site_without_a_module_is_clipped_over_what_it_sent_and_adds_zero_there():
    # beta has no images: its norm is over tabular and fusion only, and it adds nothing to IMAGE
    beta = {TABULAR: GLOBAL[TABULAR] + f32(6, 0), FUSION: GLOBAL[FUSION] + f32(0, 8)}
    update = clip_update(GLOBAL, beta, {"num-examples": 10}, clipping_norm=5.0)
    assert set(update.delta) == {TABULAR, FUSION} and update.norm == pytest.approx(10.0)
    np.testing.assert_allclose(update.delta[FUSION], [0.0, 4.0])
    # a module sent with weight 0 (no sample carried it) is not part of the update either
    with_zero = {**beta, IMAGE: GLOBAL[IMAGE] + f32(100, 100)}
    zero_weight = clip_update(GLOBAL, with_zero, {"num-examples": 10, "num-examples.encoders.image": 0}, clipping_norm=5.0)
    assert set(zero_weight.delta) == {TABULAR, FUSION} and zero_weight.norm == pytest.approx(10.0)
    # an unchanged update (norm 0) is left at zero, not divided by zero
    assert clip_update(GLOBAL, {TABULAR: GLOBAL[TABULAR]}, {"num-examples": 1}, clipping_norm=1.0).norm == 0.0


def test_with_no_noise_the_release_is_the_unweighted_mean_over_the_fixed_denominator():
    alpha = clip_update(GLOBAL, {IMAGE: GLOBAL[IMAGE] + f32(3, 4), TABULAR: GLOBAL[TABULAR] + f32(0, 0)},
                        {"num-examples": 1000}, clipping_norm=1.0)  # norm 5 -> (0.6, 0.8)
    beta = clip_update(GLOBAL, {TABULAR: GLOBAL[TABULAR] + f32(0.5, 0)}, {"num-examples": 1}, clipping_norm=1.0)
    mean = noisy_mean(GLOBAL, [alpha.delta, beta.delta], noise_std=0.0, denominator=4, rng=np.random.default_rng(0))
    # n = 4 expected sites: sums / 4, whatever the sample counts (1000 vs 1) and the senders (1 of image)
    np.testing.assert_allclose(mean[IMAGE], GLOBAL[IMAGE] + f32(0.6, 0.8) / 4, rtol=1e-6)
    np.testing.assert_allclose(mean[TABULAR], GLOBAL[TABULAR] + f32(0.5, 0) / 4, rtol=1e-6)
    np.testing.assert_array_equal(mean[FUSION], GLOBAL[FUSION])
    assert mean[STEPS] == GLOBAL[STEPS] and mean[IMAGE].dtype == np.float32


def test_the_noise_on_every_coordinate_has_std_z_c_over_n():
    big = {"encoders.image.w": np.zeros(60_000, np.float32), "fusion.w": np.zeros((200, 100), np.float32),
           "fusion.count": np.zeros(3, np.int64)}  # fmt: skip
    z, c, n = 2.0, 0.5, 4
    # nobody sent the image encoder: it is noised all the same
    sent = {"fusion.w": np.zeros((200, 100))}
    mean = noisy_mean(big, [sent], noise_std=z * c / n, denominator=n, rng=np.random.default_rng(1))
    for key in ("encoders.image.w", "fusion.w"):
        assert np.std(mean[key]) == pytest.approx(z * c / n, rel=0.02), key
        assert abs(np.mean(mean[key])) < 0.01
    np.testing.assert_array_equal(mean["fusion.count"], 0)
    kept = noisy_mean(big, [], noise_std=1.0, denominator=n, rng=np.random.default_rng(1), local_modules=["fusion"])
    np.testing.assert_array_equal(kept["fusion.w"], 0.0)  # a module the config keeps at the sites: no noise
    assert np.std(kept["encoders.image.w"]) == pytest.approx(1.0, rel=0.02)


def test_adaptive_clipping_moves_c_as_andrew_et_al_update_says():
    # 1 of 4 updates unclipped, target 0.5, lr 0.2, no count noise: b = 1/4, C' = C exp(-0.2 (0.25 - 0.5))
    rng = np.random.default_rng(0)
    new, share = adaptive_clipping_norm(1.0, unclipped=[True, False, False, False], target_quantile=0.5, lr=0.2,
                                        count_stddev=0.0, expected_sites=4, rng=rng)  # fmt: skip
    assert share == pytest.approx(0.25) and new == pytest.approx(math.exp(0.05))
    # all unclipped at target 0.5: C shrinks by exp(-0.1)
    new, _ = adaptive_clipping_norm(2.0, unclipped=[True] * 4, target_quantile=0.5, lr=0.2, count_stddev=0.0,
                                    expected_sites=4, rng=rng)  # fmt: skip
    assert new == pytest.approx(2.0 * math.exp(-0.1))
    # 3 of 4 sampled replied (n = 4): the centred count gives 1/2 + (1 - 1.5) / 4
    _, share = adaptive_clipping_norm(1.0, unclipped=[True, False, False], target_quantile=0.5, lr=0.2,
                                      count_stddev=0.0, expected_sites=4, rng=rng)  # fmt: skip
    assert share == pytest.approx(0.375)


def test_adaptive_noise_splits_the_effective_multiplier_as_theorem_1():
    z, sigma_b = 1.0, 1.0
    z_update = update_noise_multiplier(z, count_stddev=sigma_b, expected_sites=4)
    assert z_update == pytest.approx((z**-2 - (2 * sigma_b) ** -2) ** -0.5)
    assert (z_update**-2 + (2 * sigma_b) ** -2) ** -0.5 == pytest.approx(z)
    assert default_count_stddev(noise_multiplier=1.0, expected_sites=4) == 1.0
    assert default_count_stddev(noise_multiplier=1.0, expected_sites=100) == 5.0
    with pytest.raises(ValueError, match="privacy.clipped_count_stddev must be > noise_multiplier / 2"):
        update_noise_multiplier(1.0, count_stddev=0.5, expected_sites=4)


def test_poisson_sampling_takes_each_site_independently_at_rate_q():
    rng = np.random.default_rng(0)
    counts = [len(poisson_sample(range(100), rate=0.3, rng=rng)) for _ in range(200)]
    assert np.mean(counts) == pytest.approx(30, rel=0.03)
    assert np.std(counts) == pytest.approx(math.sqrt(100 * 0.3 * 0.7), rel=0.2)  # binomial, not a fixed size
    assert poisson_sample([3, 1, 2], rate=1.0, rng=rng) == [3, 1, 2]


def _fedavg(**kwargs):
    return ModalityAwareFedAvg(min_train_nodes=2, min_available_nodes=2, **kwargs)


def test_the_wrapper_clips_each_reply_and_averages_without_weights():
    strategy = CentralDPStrategy(_fedavg(), noise_multiplier=0.0, clipping_norm=1.0, expected_sites=2, delta=1e-5,
                                 rng=np.random.default_rng(0))  # fmt: skip
    replies = [reply("alpha", {IMAGE: GLOBAL[IMAGE] + f32(3, 4), TABULAR: GLOBAL[TABULAR]}, {"num-examples": 90}),
               reply("beta", {TABULAR: GLOBAL[TABULAR] + f32(0.2, 0)}, {"num-examples": 10})]  # fmt: skip
    merged = run_round(strategy, GLOBAL, replies)
    np.testing.assert_allclose(merged[IMAGE], GLOBAL[IMAGE] + f32(0.6, 0.8) / 2, rtol=1e-6)
    np.testing.assert_allclose(merged[TABULAR], GLOBAL[TABULAR] + f32(0.2, 0) / 2, rtol=1e-6)
    np.testing.assert_array_equal(merged[FUSION], GLOBAL[FUSION])
    assert merged[STEPS] == GLOBAL[STEPS]
    (record,) = strategy.accountant.rounds
    assert (record.sampled, record.aggregated, record.clipped, record.clipping_norm) == (2, 2, 1, 1.0)


def test_a_round_without_replies_still_releases_noise_and_is_accounted():
    strategy = CentralDPStrategy(_fedavg(), noise_multiplier=1.0, clipping_norm=1.0, expected_sites=2, delta=1e-5,
                                 rng=np.random.default_rng(0))  # fmt: skip
    # both replies are dropped (non-finite values): nothing to aggregate, noise all the same
    bad = [reply(site, {TABULAR: f32(np.nan, 0)}, {"num-examples": 1}) for site in ("a", "b")]
    merged = run_round(strategy, GLOBAL, bad)
    assert not np.allclose(merged[TABULAR], GLOBAL[TABULAR]), "the release is noise alone, as the analysis assumes"
    assert len(strategy.accountant.rounds) == 1 and strategy.accountant.rounds[0].aggregated == 0


def test_a_server_optimiser_takes_the_noisy_mean_as_its_pseudo_gradient():
    inner = ModalityAwareFedAdam(server_lr=0.1, min_train_nodes=2, min_available_nodes=2)
    strategy = CentralDPStrategy(inner, noise_multiplier=0.0, clipping_norm=10.0, expected_sites=2, delta=1e-5)
    replies = [reply("alpha", {TABULAR: GLOBAL[TABULAR] + f32(1, -1)}, {"num-examples": 5}),
               reply("beta", {TABULAR: GLOBAL[TABULAR] + f32(1, -1)}, {"num-examples": 5})]  # fmt: skip
    merged = run_round(strategy, GLOBAL, replies)
    # Adam's first step from m = 0, v = tau^2: x + lr (1 - b1) d / (sqrt(tau^2 + (1 - b2) d^2) + tau), d = +-1
    d = np.array([1.0, -1.0])
    expected = GLOBAL[TABULAR] + 0.1 * 0.1 * d / (np.sqrt(1e-6 + 0.01 * d**2) + 1e-3)
    np.testing.assert_allclose(merged[TABULAR], expected, rtol=1e-5)
    np.testing.assert_array_equal(merged[IMAGE], GLOBAL[IMAGE])  # delta 0 and no noise: no step


def test_the_wrapper_samples_sites_by_poisson_at_fraction_train():
    strategy = CentralDPStrategy(ModalityAwareFedAvg(fraction_train=0.5, min_train_nodes=1, min_available_nodes=1),
                                 noise_multiplier=1.0, clipping_norm=1.0, expected_sites=20, delta=1e-5,
                                 rng=np.random.default_rng(3))  # fmt: skip
    sizes = {len(list(strategy.configure_train(r, as_record(GLOBAL), _config(), FakeGrid(range(40))))) for r in range(30)}
    assert len(sizes) > 3, "the sample size varies from round to round"


def _config():
    return ConfigRecord()


@pytest.mark.parametrize("cls", [ModalityAwareMedian, ModalityAwareKrum])
def test_a_robust_rule_cannot_be_wrapped(cls):
    with pytest.raises(ValueError, match="needs each site's update"):
        CentralDPStrategy(cls(), noise_multiplier=1.0, clipping_norm=1.0, expected_sites=2, delta=1e-5)
