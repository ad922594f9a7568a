"""The server's best-round rule (``personalization.select=best_val``) on hand-made figures."""

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord

from server.round_selection import BestRound


def _arrays(value: float) -> ArrayRecord:
    return ArrayRecord({"w": torch.full((2,), value)})


def _round(best: BestRound, server_round: int, figures: list[dict], weight: float) -> bool:
    for metrics in figures:
        best.site_figures(server_round, "evaluate", MetricRecord(metrics))
    best.site_figures(server_round, "train", MetricRecord({"val-auroc": 1.0}))  # training replies never count
    return best.global_arrays(server_round, _arrays(weight))


def test_the_round_with_the_best_mean_site_figure_is_kept_and_ties_keep_the_earlier():
    best = BestRound("auroc", higher_is_better=True)
    kept = [
        _round(best, 1, [{"val-auroc": 0.6}, {"val-auroc": 0.7}], 1.0),  # 0.65
        _round(best, 2, [{"val-auroc": 0.8}, {"val-auroc": float("nan")}], 2.0),  # 0.8 from one site
        _round(best, 3, [{"val-auroc": 0.7}, {"val-auroc": 0.9}], 3.0),  # 0.8: a tie, the earlier stays
        _round(best, 4, [], 4.0),  # no figures: not a candidate
        _round(best, 5, [{"val-auroc": 0.75}], 5.0),
    ]
    assert kept == [True, True, False, False, False]
    assert best.round == 2 and np.isclose(best.score, 0.8)
    assert torch.equal(best.arrays.to_torch_state_dict()["w"], torch.full((2,), 2.0))


def test_a_lower_is_better_headline_keeps_the_lowest_and_no_figure_keeps_nothing():
    best = BestRound("rmse", higher_is_better=False)
    for server_round, rmse in enumerate([2.0, 1.0, 1.5], start=1):
        _round(best, server_round, [{"val-rmse": rmse}], float(server_round))
    assert best.round == 2
    nothing = BestRound("auroc", higher_is_better=True)
    _round(nothing, 1, [{"val-loss": 0.3}], 1.0)
    assert nothing.round is None and nothing.arrays is None


def test_the_kept_arrays_are_a_copy():
    best, arrays = BestRound("auroc", higher_is_better=True), _arrays(1.0)
    best.site_figures(1, "evaluate", MetricRecord({"val-auroc": 0.7}))
    best.global_arrays(1, arrays)
    arrays["w"] = _arrays(9.0)["w"]
    assert torch.equal(best.arrays.to_torch_state_dict()["w"], torch.full((2,), 1.0))
