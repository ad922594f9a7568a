"""Means over repeats and paired comparisons, against hand computations."""

import numpy as np
import pytest

from simulation.repeats import aggregate_repeats, paired_comparison, repeats_markdown
from simulation.run_summary import RunSummary, SiteWins


def _summary(fed: dict[str, float], pooled: dict[str, float], flagged: str = "c") -> RunSummary:
    def method(values):
        per_site = {s: {"auroc": v, "readable": s != flagged} for s, v in values.items()}
        readable = [v for s, v in values.items() if s != flagged]
        return {"per_site": per_site, "site_mean": {"auroc": float(np.mean(readable))},
                "site_mean_all": {"auroc": float(np.mean(list(values.values())))}}
    return RunSummary.from_dict({"name": "toy", "task": "binary", "headline": "auroc", "higher_is_better": True,
                                 "methods": {"federated": method(fed), "pooled": method(pooled)}})


RUNS = [
    _summary({"a": 0.70, "b": 0.80, "c": 0.2}, {"a": 0.75, "b": 0.70, "c": 0.9}),
    _summary({"a": 0.72, "b": 0.60, "c": 0.5}, {"a": 0.72, "b": 0.70, "c": 0.4}),
    _summary({"a": 0.68, "b": 0.90, "c": 0.6}, {"a": 0.80, "b": 0.85, "c": 0.6}),
]


def test_aggregate_is_the_mean_and_sample_std_over_repeats():
    agg = aggregate_repeats(RUNS)
    means = [0.75, 0.66, 0.79]  # readable sites a and b, per repeat
    assert agg["federated"].site_mean["auroc"].mean == pytest.approx(np.mean(means))
    assert agg["federated"].site_mean["auroc"].std == pytest.approx(np.std(means, ddof=1))
    assert agg["federated"].site_mean["auroc"].n == 3
    assert agg["federated"].per_site["c"].mean == pytest.approx((0.2 + 0.5 + 0.6) / 3)
    assert agg["federated"].readable == {"a": True, "b": True, "c": False}


def test_paired_comparison_counts_wins_per_site_within_each_repeat():
    p = paired_comparison(RUNS, "federated", "pooled")
    assert p.differences == pytest.approx([0.75 - 0.725, 0.66 - 0.71, 0.79 - 0.825])
    assert (p.mean, p.n) == (pytest.approx(np.mean(p.differences)), 3)
    assert p.per_site["a"] == SiteWins(first=0, second=2, ties=1, readable=True)
    assert p.per_site["b"] == SiteWins(first=2, second=1, ties=0, readable=True)
    assert p.per_site["c"].readable is False
    assert p.to_dict()["per_site"]["a"] == {"federated": 0, "pooled": 2, "ties": 1, "readable": True}
    text = "\n".join(repeats_markdown(aggregate_repeats(RUNS), [p], "auroc", 3))
    assert "c †" in text and "federated − pooled" in text and "a 0/2/1" in text
