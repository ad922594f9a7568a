"""Summaries of what the sites reported: per-site figures with intervals, the mean over the
readable sites (the headline), and, in simulation only, the pooled-test figure.

Federated and personalised figures come from the sites themselves (the final Flower
evaluation round, :mod:`server.final_evaluation`). The pooled and local-only baselines are
scored with the very same function a site runs, :func:`client.site_evaluation.evaluate_at_site`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from client.data import SiteDataset
from client.site_evaluation import SiteEvaluation, evaluate_at_site
from client.train import predict
from fusion_models.task import Task
from simulation.run_summary import MethodResult, SiteResult

__all__ = ["evaluate_sites", "pooled_test_metrics", "summarise_method"]


def evaluate_sites(
    model_for: Callable[[str], torch.nn.Module],
    val_sets: dict[str, SiteDataset],
    test_sets: dict[str, SiteDataset],
    task: Task,
    *,
    model_name: str,
    device: torch.device,
    n_boot: int,
    seed: int,
) -> list[SiteEvaluation]:
    """What each site would report for ``model_for(site)`` (baselines: run centrally, same code)."""
    return [
        evaluate_at_site(model_for(site), site=site, model_name=model_name, val_set=val_sets[site], test_set=test,
                         task=task, device=device, n_boot=n_boot, seed=seed + i)  # fmt: skip
        for i, (site, test) in enumerate(test_sets.items())
    ]


def pooled_test_metrics(
    model_for: Callable[[str], torch.nn.Module], test_sets: dict[str, SiteDataset], task: Task, *, device: torch.device
) -> dict[str, float]:
    """Simulation only: one metric over every site's test rows together, each scored by its site's model."""
    targets, scores = [], []
    for site, dataset in test_sets.items():
        target, score, _ = predict(model_for(site), dataset, task, device=device)
        targets.append(target)
        scores.append(score)
    if not targets or sum(len(t) for t in targets) == 0:
        return {}
    return {k: float(v) for k, v in task.metrics(np.concatenate(targets), np.concatenate(scores)).items()}


def summarise_method(evaluations: list[SiteEvaluation], *, metrics: list[str], pooled: dict[str, float]) -> MethodResult:
    """Per-site results, the mean over readable sites (``site_mean``) and over all sites.

    A site enters a metric's mean when it is readable (``client.site_evaluation.READABLE_RULE``)
    and the metric is defined there; ``site_mean_n`` counts them and ``site_mean_all``
    averages every site where the metric is defined, flagged ones included.
    """
    per_site: dict[str, SiteResult] = {}
    for e in evaluations:
        counts = {k: int(e.metrics[k]) for k in ("n_pos", "n_events") if k in e.metrics and np.isfinite(e.metrics[k])}
        per_site[e.site] = SiteResult(
            metrics={m: float(e.metrics.get(m, float("nan"))) for m in metrics},
            intervals={m: (float(e.intervals[m][0]), float(e.intervals[m][1])) for m in metrics if m in e.intervals},
            n=e.n, threshold=e.threshold, threshold_source=e.threshold_source, readable=e.readable, note=e.note,
            train_steps=e.train_steps, **counts,
        )  # fmt: skip
    site_mean, site_mean_n, site_mean_all = {}, {}, {}
    for m in metrics:
        readable = [r.value(m) for r in per_site.values() if r.readable and np.isfinite(r.value(m))]
        every = [r.value(m) for r in per_site.values() if np.isfinite(r.value(m))]
        site_mean[m] = float(np.mean(readable)) if readable else float("nan")
        site_mean_n[m] = len(readable)
        site_mean_all[m] = float(np.mean(every)) if every else float("nan")
    return MethodResult(per_site=per_site, site_mean=site_mean, site_mean_n=site_mean_n, site_mean_all=site_mean_all,
                        pooled_test={m: float(pooled.get(m, float("nan"))) for m in metrics})  # fmt: skip
