"""Shared fixtures of the strategy tests: a two-round scenario in which one site has no
images in round 1 and nobody sends the image encoder in round 2, and the helpers that build
Flower replies by hand and run a strategy through ``configure_train`` / ``aggregate_train``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from client.messages import ARRAYS, METRICS, SITE, SITE_NAME

IMAGE, TABULAR, FUSION, STEPS = "encoders.image.w", "encoders.tabular.w", "fusion.w", "fusion.steps"


def f32(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


#: The global arrays before round 1.
GLOBAL: dict[str, np.ndarray] = {
    IMAGE: f32(1.0, -2.0),
    TABULAR: f32(0.5, 0.25),
    FUSION: f32(0.0, 1.0),
    STEPS: np.array(3, dtype=np.int64),
}

#: (site, arrays, metrics) per round. Round 1: alpha trains all modules, its images on 10 of
#: its 30 samples; beta has no images. Round 2: nobody sends the image encoder.
ROUNDS: list[list[tuple[str, dict[str, np.ndarray], dict[str, float]]]] = [
    [
        ("alpha", {IMAGE: f32(2, -1), TABULAR: f32(1, 1), FUSION: f32(1, 2), STEPS: np.array(5)},
         {"num-examples": 30, "num-examples.encoders.image": 10}),
        ("beta", {TABULAR: f32(0, 3), FUSION: f32(3, 0), STEPS: np.array(7)}, {"num-examples": 10}),
    ],
    [
        ("alpha", {TABULAR: f32(2, 0), FUSION: f32(0, 1)}, {"num-examples": 20}),
        ("beta", {TABULAR: f32(1, 1), FUSION: f32(2, 2)}, {"num-examples": 20}),
    ],
]  # fmt: skip

#: The per-module weighted averages of ROUNDS, by hand: only alpha sent the image encoder in
#: round 1; tabular and fusion weigh alpha 30 and beta 10 in round 1, 20 and 20 in round 2.
AVERAGES: list[dict[str, np.ndarray]] = [
    {IMAGE: f32(2, -1), TABULAR: f32(0.75, 1.5), FUSION: f32(1.5, 1.5), STEPS: np.array(5)},
    {TABULAR: f32(1.5, 0.5), FUSION: f32(1.0, 1.5)},
]


class FakeGrid:
    """The two Grid methods a strategy calls, answering each message with a prepared reply."""

    def __init__(self, nodes: Sequence[int], answer=None) -> None:
        self.nodes = list(nodes)
        self.answer = answer

    def get_node_ids(self) -> list[int]:
        return self.nodes

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        return [self.answer(message) for message in messages]


def reply(site: str, arrays: dict[str, np.ndarray], metrics: dict[str, float], *, kind: str = "train") -> Message:
    """A site's reply as client/app.py packs it: arrays, metrics, and the site's name."""
    content = RecordDict({
        ARRAYS: ArrayRecord({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}),
        METRICS: MetricRecord(metrics),
        SITE: ConfigRecord({SITE_NAME: site}),
    })  # fmt: skip
    return Message(content=content, dst_node_id=0, message_type=kind)


def as_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})


def run_round(strategy, global_arrays: dict[str, np.ndarray], replies: list[Message], *, server_round: int = 1):
    """``configure_train`` with ``global_arrays``, then ``aggregate_train`` of ``replies``:
    the new global arrays as numpy (None if nothing was aggregated)."""
    # Enough nodes for the strategy's minimum, else Flower's sampling waits for more forever.
    grid = FakeGrid(range(max(len(replies), strategy.min_available_nodes, strategy.min_train_nodes)))
    assert list(strategy.configure_train(server_round, as_record(global_arrays), ConfigRecord(), grid))
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return None if arrays is None else {k: v.numpy() for k, v in arrays.items()}


def run_rounds(strategy, global_arrays: dict[str, np.ndarray], rounds=ROUNDS) -> list[dict[str, np.ndarray]]:
    """The global arrays after each round of ``rounds`` (site, arrays, metrics) replies."""
    history = []
    for number, sites in enumerate(rounds, start=1):
        global_arrays = run_round(strategy, global_arrays, [reply(*site) for site in sites], server_round=number)
        history.append(global_arrays)
    return history


@pytest.fixture(autouse=True)
def _flower_identity(task_identity):
    """Every strategy test builds Messages, which need Flower's task identity."""
    yield task_identity
