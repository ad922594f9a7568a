"""The weighted mean of the sites' reported figures that Flower logs each round, over the sites
that could compute each figure.

Flower's own ``aggregate_metricrecords`` multiplies every site's value by its weight, so one
site without a positive in its validation split (AUROC undefined, NaN) turns the round's
``val-auroc`` into NaN. Here a figure is averaged over the sites where it is finite, with the
weights renormalised among them; ``<figure>.sites`` then says how many sites it covers, and a
figure no site could compute is left out.
"""

from __future__ import annotations

import math

from flwr.app import MetricRecord, RecordDict

__all__ = ["SITES_SUFFIX", "finite_weighted_mean"]

SITES_SUFFIX = ".sites"


def finite_weighted_mean(records: list[RecordDict], weighting_metric_name: str) -> MetricRecord:
    """Weighted mean of each scalar figure over the replies where it is finite (Flower's
    ``*_metrics_aggr_fn`` signature); list-valued figures follow Flower's rule, over every reply."""
    replies = [next(iter(record.metric_records.values())) for record in records]
    weights = [float(metrics[weighting_metric_name]) for metrics in replies]
    total = sum(weights)
    sums: dict[str, float] = {}
    covered: dict[str, float] = {}
    sites: dict[str, int] = {}
    lists: dict[str, list[float]] = {}
    for weight, metrics in zip(weights, replies, strict=True):
        for key, value in metrics.items():
            if key == weighting_metric_name:
                continue
            if isinstance(value, list):
                current = lists.setdefault(key, [0.0] * len(value))
                lists[key] = [c + float(v) * weight / total for c, v in zip(current, value, strict=True)]
            elif math.isfinite(float(value)):
                sums[key] = sums.get(key, 0.0) + float(value) * weight
                covered[key] = covered.get(key, 0.0) + weight
                sites[key] = sites.get(key, 0) + 1
    out = MetricRecord()
    for key, value in sums.items():
        if covered[key] > 0:
            out[key] = value / covered[key]
            if sites[key] < len(replies):
                out[key + SITES_SUFFIX] = sites[key]
    for key, value in lists.items():
        out[key] = value
    return out
