"""The run's measured figures as files: ``metrics.csv`` (long format) and ``summary.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from client.atomic_io import atomic_write_text

if TYPE_CHECKING:
    from simulation.run_summary import MethodResult

__all__ = ["MetricsLog", "atomic_write_text", "federated_rows", "json_safe", "METRIC_COLUMNS", "MEAN_SITE", "POOLED_SITE"]

METRIC_COLUMNS = ["method", "round", "site", "split", "metric", "value"]
MEAN_SITE = "__mean__"
POOLED_SITE = "__pooled__"


class MetricsLog:
    """Rows of (method, round, site, split, metric, value), saved as CSV."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, *, method: str, round: int, site: str, split: str, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.rows.append(
                    {"method": method, "round": round, "site": site, "split": split, "metric": name, "value": float(value)}
                )

    def add_summary(self, method: str, round: int, result: MethodResult) -> None:
        """Final test figures of one method: every site, the mean over sites, the pooled test."""
        for site, values in result.per_site.items():  # add keeps the row's numbers: figures, counts, threshold, steps
            self.add(method=method, round=round, site=site, split="test", metrics=values.to_dict())
        self.add(method=method, round=round, site=MEAN_SITE, split="test", metrics=result.site_mean)
        self.add(method=method, round=round, site=POOLED_SITE, split="test", metrics=result.pooled_test)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=METRIC_COLUMNS)

    def save(self, path: Path) -> Path:
        return atomic_write_text(path, self.frame().to_csv(index=False))


def federated_rows(site_metrics_file: Path, log: MetricsLog) -> None:
    """Per-round, per-site figures the ServerApp recorded from the sites' replies."""
    if not site_metrics_file.exists():
        return
    for line in site_metrics_file.read_text().splitlines():
        entry = json.loads(line)
        server_round, site, kind = entry.pop("round"), entry.pop("site"), entry.pop("kind")
        values: dict[str, dict[str, float]] = {}
        for key, value in entry.items():
            split, _, metric = key.partition("-")
            if split in ("train", "val", "test") and metric and isinstance(value, (int, float)):
                values.setdefault(split, {})[metric] = value
        for split, metrics in values.items():
            if kind == "train" and split != "train":
                continue
            log.add(method="federated", round=int(server_round), site=site, split=split, metrics=metrics)


def json_safe(value: Any) -> Any:
    """NaN and inf become None so that summary.json is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
