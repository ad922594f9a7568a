"""FedAvgM: server momentum per key; a key nobody sent keeps its value and its buffer."""

import numpy as np

from server.strategies import ModalityAwareFedAvgM, fedavgm_step
from tests.server.strategies.conftest import AVERAGES, FUSION, GLOBAL, IMAGE, ROUNDS, STEPS, TABULAR, reply, run_round

LR, MOMENTUM = 0.5, 0.75


def _reference():
    """Hsu et al. 2019 by hand: buffer = momentum * buffer + (average - x); x += lr * buffer."""
    x = {k: GLOBAL[k].astype(np.float64) for k in (IMAGE, TABULAR, FUSION)}
    buffers: dict = {}
    history = []
    for averages in AVERAGES:
        for key, current in list(x.items()):
            if key in averages:
                buffers[key] = MOMENTUM * buffers.get(key, 0.0) + (averages[key] - current)
                x[key] = (current + LR * buffers[key]).astype(np.float32).astype(np.float64)  # a float32 model
        history.append(({k: v.copy() for k, v in x.items()}, {k: v.copy() for k, v in buffers.items()}))
    return history


def test_two_steps_match_a_numpy_computation_and_skip_the_unsent_key():
    arrays, state = dict(GLOBAL), {}
    for (expected, expected_state), averages in zip(_reference(), AVERAGES):
        previous_image_state = state.get(IMAGE)
        arrays, state = fedavgm_step(arrays, averages, state, server_lr=LR, momentum=MOMENTUM)
        for key in expected:
            np.testing.assert_allclose(arrays[key], expected[key], rtol=1e-6)
            np.testing.assert_allclose(state[key], expected_state[key], rtol=1e-12)
    np.testing.assert_array_equal(state[IMAGE], previous_image_state)     # round 2: no step, no decay
    assert arrays[STEPS] == 5                                                # counters: the FedAvg value


def test_momentum_zero_and_rate_one_is_fedavg():
    arrays, _ = fedavgm_step(GLOBAL, AVERAGES[0], {}, server_lr=1.0, momentum=0.0)
    for key, value in AVERAGES[0].items():
        np.testing.assert_allclose(arrays[key], value, rtol=1e-6)


def test_the_flower_class_steps_each_round_and_leaves_the_unsent_key_alone():
    strategy = ModalityAwareFedAvgM(server_lr=LR, momentum=MOMENTUM)
    arrays = dict(GLOBAL)
    for number, ((expected, _), sites) in enumerate(zip(_reference(), ROUNDS), start=1):
        image_before = (arrays[IMAGE].copy(), strategy.state.get(IMAGE))
        arrays = run_round(strategy, arrays, [reply(*site) for site in sites], server_round=number)
        for key in expected:
            np.testing.assert_allclose(arrays[key], expected[key], rtol=1e-6)
    np.testing.assert_array_equal(arrays[IMAGE], image_before[0])
    assert strategy.state[IMAGE] is image_before[1]
