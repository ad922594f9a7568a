"""The round figures Flower logs are averaged over the sites that could compute them."""

from __future__ import annotations

import math

import pytest
from flwr.app import MetricRecord, RecordDict

from server.strategies.fedavg import ModalityAwareFedAvg
from server.strategies.metric_aggregation import SITES_SUFFIX, finite_weighted_mean
from tests.server.strategies.conftest import reply


def _records(*metrics: dict) -> list[RecordDict]:
    return [RecordDict({"metrics": MetricRecord(m)}) for m in metrics]


def test_a_figure_one_site_could_not_compute_is_averaged_over_the_others():
    records = _records({"num-examples": 30, "val-auroc": 0.8, "val-loss": 1.0},
                       {"num-examples": 10, "val-auroc": float("nan"), "val-loss": 3.0},
                       {"num-examples": 10, "val-auroc": 0.5, "val-loss": 2.0})  # fmt: skip
    out = finite_weighted_mean(records, "num-examples")
    assert out["val-auroc"] == pytest.approx((30 * 0.8 + 10 * 0.5) / 40)
    assert out["val-auroc" + SITES_SUFFIX] == 2
    assert out["val-loss"] == pytest.approx((30 * 1.0 + 10 * 3.0 + 10 * 2.0) / 50)
    assert "val-loss" + SITES_SUFFIX not in out  # every site computed it
    assert "num-examples" not in out


def test_a_figure_no_site_could_compute_is_left_out_and_lists_follow_flowers_rule():
    records = _records({"num-examples": 1, "val-auroc": float("nan"), "curve": [1.0, 2.0]},
                       {"num-examples": 3, "val-auroc": float("nan"), "curve": [3.0, 6.0]})  # fmt: skip
    out = finite_weighted_mean(records, "num-examples")
    assert "val-auroc" not in out and "val-auroc" + SITES_SUFFIX not in out
    assert out["curve"] == pytest.approx([2.5, 5.0])


def test_the_strategies_log_no_nan_for_a_site_without_positives():
    strategy = ModalityAwareFedAvg(min_available_nodes=2, min_train_nodes=2, min_evaluate_nodes=2)
    replies = [reply("alpha", {}, {"num-examples": 20, "val-auroc": 0.7}, kind="evaluate"),
               reply("beta", {}, {"num-examples": 20, "val-auroc": float("nan")}, kind="evaluate")]  # fmt: skip
    out = strategy.aggregate_evaluate(1, replies)
    assert out is not None and math.isfinite(out["val-auroc"]) and out["val-auroc"] == pytest.approx(0.7)
    assert out["val-auroc" + SITES_SUFFIX] == 1
