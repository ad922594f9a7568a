"""Evaluate trained models on every site's test split, with bootstrap confidence intervals,
the mean over sites (the headline) and the pooled-test figure beside it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from client.data import SiteDataset
from client.train import predict
from fusion_models.task import Task

__all__ = ["SitePredictions", "predict_sites", "bootstrap_metrics", "summarise_method"]


@dataclass
class SitePredictions:
    """One site's test targets and scores under one method."""

    site: str
    target: np.ndarray
    scores: np.ndarray


def predict_sites(
    model_for: Callable[[str], torch.nn.Module], tests: dict[str, SiteDataset], task: Task, *, device: torch.device
) -> list[SitePredictions]:
    """Scores of ``model_for(site)`` on each site's test split."""
    out = []
    for site, dataset in tests.items():
        target, scores, _ = predict(model_for(site), dataset, task, device=device)
        out.append(SitePredictions(site=site, target=target, scores=scores))
    return out


def bootstrap_metrics(
    task: Task, target: np.ndarray, scores: np.ndarray, *, n_boot: int, seed: int, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of every metric of ``task`` (rows resampled together)."""
    rng = np.random.default_rng(seed)
    n = len(target)
    draws: dict[str, list[float]] = {}
    if n == 0 or n_boot <= 0:
        return {}
    for _ in range(n_boot):
        index = rng.integers(0, n, size=n)
        for name, value in task.metrics(target[index], scores[index]).items():
            if np.isfinite(value):
                draws.setdefault(name, []).append(float(value))
    alpha = (1.0 - level) / 2
    intervals = {}
    for name, values in draws.items():
        if len(values) >= 20:  # fewer valid resamples give no honest interval
            intervals[name] = (float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)))
    return intervals


def _count_key(task: Task) -> str | None:
    return {"binary": "n_pos", "survival": "n_events"}.get(task.name)


def summarise_method(
    predictions: list[SitePredictions], task: Task, *, metrics: list[str], n_boot: int, seed: int
) -> dict:
    """Per-site metrics with intervals, their mean over sites, and the pooled-test metrics.

    Sites where a metric is undefined (e.g. one class in the test split) are left out of that
    metric's mean, and ``site_mean_n`` says how many sites entered it.
    """
    per_site: dict[str, dict] = {}
    for i, p in enumerate(predictions):
        values = task.metrics(p.target, p.scores)
        intervals = bootstrap_metrics(task, p.target, p.scores, n_boot=n_boot, seed=seed + i)
        row: dict = {m: float(values.get(m, float("nan"))) for m in metrics}
        row.update({f"{m}_ci": list(intervals[m]) for m in metrics if m in intervals})
        row["n"] = int(len(p.target))
        key = _count_key(task)
        if key is not None and key in values:
            row[key] = int(values[key])
        per_site[p.site] = row
    site_mean, site_mean_n = {}, {}
    for m in metrics:
        finite = [r[m] for r in per_site.values() if np.isfinite(r[m])]
        site_mean[m] = float(np.mean(finite)) if finite else float("nan")
        site_mean_n[m] = len(finite)
    pooled_target = np.concatenate([p.target for p in predictions]) if predictions else np.zeros(0)
    pooled_scores = np.concatenate([p.scores for p in predictions]) if predictions else np.zeros(0)
    pooled_values = task.metrics(pooled_target, pooled_scores) if len(pooled_target) else {}
    pooled = {m: float(pooled_values.get(m, float("nan"))) for m in metrics}
    return {"per_site": per_site, "site_mean": site_mean, "site_mean_n": site_mean_n, "pooled_test": pooled}
