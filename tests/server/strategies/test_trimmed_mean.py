"""Coordinate-wise trimmed mean per key over the sites that sent it."""

import numpy as np
import pytest

from server.strategies import ModalityAwareTrimmedMean, aggregate_trimmed_mean
from tests.server.strategies.conftest import FUSION, GLOBAL, IMAGE, TABULAR, f32, reply, run_round

# Five sites send the fusion head; only two send the image encoder.
FUSIONS = [f32(1, 50), f32(2, -40), f32(3, 1), f32(4, 2), f32(-90, 3)]
SITES = [(f"s{i}", {FUSION: v}, {"num-examples": 10}) for i, v in enumerate(FUSIONS)]
SITES[0][1][IMAGE] = f32(0, 2)
SITES[1][1][IMAGE] = f32(4, 4)


def test_trimmed_mean_by_hand_with_a_site_lacking_a_module():
    merged = aggregate_trimmed_mean(GLOBAL, [(a, m) for _, a, m in SITES], trim_fraction=0.2)
    # floor(0.2 * 5) = 1 per side: column 0 keeps 1, 2, 3; column 1 keeps 1, 2, 3.
    np.testing.assert_allclose(merged[FUSION], [2, 2])
    # floor(0.2 * 2) = 0: the two image senders are averaged untrimmed.
    np.testing.assert_allclose(merged[IMAGE], [2, 3])
    np.testing.assert_array_equal(merged[TABULAR], GLOBAL[TABULAR])


def test_trim_zero_is_the_unweighted_mean():
    merged = aggregate_trimmed_mean(GLOBAL, [(a, m) for _, a, m in SITES], trim_fraction=0.0)
    np.testing.assert_allclose(merged[FUSION], np.mean(np.stack(FUSIONS), axis=0), rtol=1e-6)


@pytest.mark.parametrize("trim_fraction", [0.5, 0.7, -0.1])
def test_trimming_everything_is_refused(trim_fraction):
    with pytest.raises(ValueError, match=r"trim_fraction must be in \[0, 0.5\)"):
        aggregate_trimmed_mean(GLOBAL, [], trim_fraction=trim_fraction)
    with pytest.raises(ValueError, match="trim_fraction"):
        ModalityAwareTrimmedMean(trim_fraction=trim_fraction)


def test_the_flower_class_passes_its_trim_fraction():
    merged = run_round(ModalityAwareTrimmedMean(trim_fraction=0.2), GLOBAL, [reply(*site) for site in SITES])
    np.testing.assert_allclose(merged[FUSION], [2, 2])
    untrimmed = run_round(ModalityAwareTrimmedMean(trim_fraction=0.0), GLOBAL, [reply(*site) for site in SITES])
    np.testing.assert_allclose(untrimmed[FUSION], np.mean(np.stack(FUSIONS), axis=0), rtol=1e-6)
