"""FedAdagrad: Adagrad on the server per key; a key nobody sent keeps its value and its moments."""

import numpy as np

from server.strategies import ModalityAwareFedAdagrad, fedadagrad_step
from tests.server.strategies.conftest import AVERAGES, FUSION, GLOBAL, IMAGE, ROUNDS, STEPS, TABULAR, reply, run_round

# Values away from the defaults, so that a setting not passed through changes the result.
LR, BETA_1, TAU = 0.3, 0.5, 0.05


def _reference():
    """Reddi et al. 2021, Algorithm 2 (FedAdagrad) by hand: m from 0, v from tau^2."""
    x = {k: GLOBAL[k].astype(np.float64) for k in (IMAGE, TABULAR, FUSION)}
    m: dict = {}
    v: dict = {}
    history = []
    for averages in AVERAGES:
        for key, current in list(x.items()):
            if key not in averages:
                continue
            delta = averages[key].astype(np.float64) - current
            m[key] = BETA_1 * m.get(key, 0.0) + (1 - BETA_1) * delta
            v[key] = v.get(key, TAU**2) + delta * delta
            # the global model is float32: each round's result is stored at that precision
            x[key] = (current + LR * m[key] / (np.sqrt(v[key]) + TAU)).astype(np.float32).astype(np.float64)
        history.append({k: val.copy() for k, val in x.items()})
    return history, m, v


def test_two_steps_match_a_numpy_computation_and_skip_the_unsent_key():
    expected, m, v = _reference()
    arrays, state = dict(GLOBAL), {}
    for round_expected, averages in zip(expected, AVERAGES):
        previous_image_state = state.get(IMAGE)
        arrays, state = fedadagrad_step(arrays, averages, state, server_lr=LR, beta_1=BETA_1, tau=TAU)
        for key in round_expected:
            np.testing.assert_allclose(arrays[key], round_expected[key], rtol=1e-6)
    for key in m:
        np.testing.assert_allclose(state[key].m, m[key], rtol=1e-12)
        np.testing.assert_allclose(state[key].v, v[key], rtol=1e-12)
    assert state[IMAGE] is previous_image_state                            # round 2: no step for it
    assert arrays[STEPS] == 5


def test_the_flower_class_steps_each_round_and_leaves_the_unsent_key_alone():
    expected, _, _ = _reference()
    strategy = ModalityAwareFedAdagrad(server_lr=LR, beta_1=BETA_1, tau=TAU)
    arrays = dict(GLOBAL)
    for number, (round_expected, sites) in enumerate(zip(expected, ROUNDS), start=1):
        image_before = (arrays[IMAGE].copy(), strategy.state.get(IMAGE))
        arrays = run_round(strategy, arrays, [reply(*site) for site in sites], server_round=number)
        for key in round_expected:
            np.testing.assert_allclose(arrays[key], round_expected[key], rtol=1e-6)
    np.testing.assert_array_equal(arrays[IMAGE], image_before[0])
    assert strategy.state[IMAGE] is image_before[1]
