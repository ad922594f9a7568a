"""What a site reports about a model: its test metrics with bootstrap intervals and the
decision threshold it chose on its own validation split. Computed at the site; only these
figures leave it.

Rules (documented in the README):
- **Threshold** (binary tasks): the validation score that maximises Youden's J, i.e.
  balanced accuracy (the highest such score on ties); 0.5 when the validation split lacks
  a class. Multiclass predictions are the arg-max; other tasks have no threshold.
- **Readable**: a site's test figure is read only when its test split holds at least
  ``MIN_READABLE`` samples of each class (binary) or ``MIN_READABLE`` events (survival), or
  ``MIN_READABLE`` samples of at least two classes (multiclass). Other sites are flagged:
  their figure is shown with its interval but kept out of the headline mean over sites.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_curve

from client.data import SiteDataset
from client.train import predict
from fusion_models.task import Task

__all__ = [
    "SiteEvaluation",
    "evaluate_at_site",
    "choose_threshold",
    "bootstrap_metrics",
    "readability",
    "MIN_READABLE",
    "RANK_INTERVAL_RULE",
    "rank_interval",
    "rank_trials",
    "THRESHOLD_RULE",
    "READABLE_RULE",
]

MIN_READABLE = 10
THRESHOLD_RULE = "Youden's J on the site's validation split (0.5 when validation lacks a class)"
READABLE_RULE = (f"a site is read when its test split has >= {MIN_READABLE} positives and negatives (binary), "
                 f">= {MIN_READABLE} events (survival) or >= {MIN_READABLE} samples in two classes (multiclass)")  # fmt: skip
_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class SiteEvaluation:
    """One model's figures at one site.

    Args:
        site: the site's name.
        model: ``global`` or ``personalized``.
        n: test samples.
        metrics: metric name -> value on the test split (nan where undefined).
        intervals: metric name -> [low, high] percentile-bootstrap 95 % interval.
        threshold: the decision threshold used for threshold metrics, or None.
        threshold_source: how it was chosen.
        readable: whether the site enters the headline mean (see ``READABLE_RULE``).
        note: why a site is not readable, or what else to know ("" when nothing).
        train_steps: local optimisation steps behind a personalised model (0 for ``global``).
    """

    site: str
    model: str
    n: int
    metrics: dict[str, float]
    intervals: dict[str, list[float]] = field(default_factory=dict)
    threshold: float | None = None
    threshold_source: str = ""
    readable: bool = True
    note: str = ""
    train_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: nan and inf become None."""
        data = asdict(self)
        data["metrics"] = {k: (float(v) if np.isfinite(v) else None) for k, v in self.metrics.items()}
        data["schema_version"] = _SCHEMA_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SiteEvaluation":
        """Inverse of :meth:`to_dict`; a missing key or another schema version is an error naming it."""
        version = data.get("schema_version")
        if version != _SCHEMA_VERSION:
            raise ValueError(f"site evaluation: schema_version {version!r}, expected {_SCHEMA_VERSION}")
        names = [f for f in cls.__dataclass_fields__]
        missing = [k for k in names if k not in data]
        if missing:
            raise ValueError(f"site evaluation of {data.get('site', '?')!r}: missing keys {missing}")
        values = {k: data[k] for k in names}
        values["metrics"] = {k: (float("nan") if v is None else float(v)) for k, v in data["metrics"].items()}
        return cls(**values)


def choose_threshold(task: Task, target: np.ndarray, scores: np.ndarray) -> tuple[float | None, str]:
    """The decision threshold of ``THRESHOLD_RULE`` from validation ``target`` and ``scores``."""
    if task.name != "binary":
        return None, "arg-max" if task.name == "multiclass" else "none"
    y = np.asarray(target, dtype=float).reshape(-1)
    if len(y) == 0 or y.min() == y.max():
        return 0.5, "default 0.5 (validation lacks a class)"
    fpr, tpr, thresholds = roc_curve(y, np.asarray(scores, dtype=float).reshape(-1))
    finite = np.isfinite(thresholds)  # the first threshold is +inf (predict nothing positive)
    j = np.where(finite, tpr - fpr, -np.inf)
    best = int(np.argmax(j))  # thresholds descend, so ties go to the highest threshold
    return float(thresholds[best]), "validation Youden's J"


def bootstrap_metrics(
    task: Task,
    target: np.ndarray,
    scores: np.ndarray,
    *,
    n_boot: int,
    seed: int,
    threshold: float | None = None,
    level: float = 0.95,
) -> dict[str, list[float]]:
    """Percentile bootstrap interval of every metric of ``task`` (rows resampled together).

    A metric gets an interval only when at least 20 resamples define it; fewer give no
    honest interval.
    """
    n = len(target)
    if n == 0 or n_boot <= 0:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        index = rng.integers(0, n, size=n)
        for name, value in task.metrics(target[index], scores[index], threshold=threshold).items():
            if np.isfinite(value):
                draws.setdefault(name, []).append(float(value))
    alpha = (1.0 - level) / 2
    return {name: [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))]
            for name, v in draws.items() if len(v) >= 20}  # fmt: skip


#: How a flagged site's headline interval is made, where the bootstrap cannot show the uncertainty.
RANK_INTERVAL_RULE = ("a flagged site's AUROC or c-index interval is the exact (Clopper-Pearson) 95 % interval of the "
                      "figure read as a proportion of m trials, m = min(positives, negatives) for AUROC and m = events "
                      "for the c-index: a binomial proportion of m trials has variance p(1-p)/m, the Birnbaum-Klose "
                      "bound on the variance of the AUROC with m samples in its smaller class, so for AUROC the "
                      "interval is conservative; for the censored c-index the same reading is an approximation. Unlike "
                      "a bootstrap of one positive, it never collapses to a point")  # fmt: skip


def rank_trials(task: Task, target: np.ndarray) -> int:
    """``m`` of ``RANK_INTERVAL_RULE`` for a binary or survival test split (0 for other tasks)."""
    t = np.asarray(target, dtype=float)
    if task.name == "binary":
        pos = int((t.reshape(-1) == 1).sum())
        return min(pos, len(t) - pos)
    if task.name == "survival" and t.ndim == 2 and len(t):
        return int(t[:, 1].sum())
    return 0


def rank_interval(value: float, trials: int, *, level: float = 0.95) -> list[float] | None:
    """Clopper-Pearson interval of ``value`` read as the proportion of ``trials`` successes."""
    if trials <= 0 or not np.isfinite(value):
        return None
    from scipy.stats import beta

    k, alpha = float(np.clip(value, 0.0, 1.0)) * trials, (1.0 - level) / 2
    low = 0.0 if k <= 0 else float(beta.ppf(alpha, k, trials - k + 1))
    high = 1.0 if k >= trials else float(beta.ppf(1 - alpha, k + 1, trials - k))
    return [low, high]


def readability(task: Task, target: np.ndarray) -> tuple[bool, str]:
    """Whether a test split can be read under ``READABLE_RULE``, and why not."""
    t = np.asarray(target, dtype=float)
    if task.name == "binary":
        pos = int((t.reshape(-1) == 1).sum())
        neg = int(len(t) - pos)
        if min(pos, neg) < MIN_READABLE:
            return False, f"{pos} positive{'s' if pos != 1 else ''} and {neg} negative{'s' if neg != 1 else ''} in test"
    elif task.name == "survival":
        events = int(t[:, 1].sum()) if t.ndim == 2 and len(t) else 0
        if events < MIN_READABLE:
            return False, f"{events} event{'s' if events != 1 else ''} in test"
    elif task.name == "multiclass":
        counts = np.bincount(t.astype(int).reshape(-1)) if len(t) else np.zeros(0, dtype=int)
        if int((counts >= MIN_READABLE).sum()) < 2:
            return False, f"fewer than two classes with {MIN_READABLE} test samples"
    elif len(t) < 2 * MIN_READABLE:
        return False, f"{len(t)} test samples"
    return True, ""


def evaluate_at_site(
    model: torch.nn.Module,
    *,
    site: str,
    model_name: str,
    val_set: SiteDataset,
    test_set: SiteDataset,
    task: Task,
    device: torch.device,
    n_boot: int,
    seed: int,
    train_steps: int = 0,
) -> SiteEvaluation:
    """Score ``model`` on the site's test split with the threshold chosen on its validation split."""
    val_target, val_scores, _ = predict(model, val_set, task, device=device)
    threshold, source = choose_threshold(task, val_target, val_scores)
    target, scores, loss = predict(model, test_set, task, device=device)
    metrics = task.metrics(target, scores, threshold=threshold) if len(target) else {}
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["loss"] = float(loss)
    intervals = bootstrap_metrics(task, target, scores, n_boot=n_boot, seed=seed, threshold=threshold)
    readable, note = readability(task, target)
    headline, trials = metrics.get(task.headline), rank_trials(task, target)
    exact = rank_interval(headline, trials) if not readable and headline is not None else None
    if exact is not None:  # the bootstrap of a handful of positives or events degenerates
        intervals[task.headline] = exact
        note += f"; {task.headline} interval exact over {trials} trial(s), not bootstrap"
    return SiteEvaluation(site=site, model=model_name, n=int(len(target)), metrics=metrics, intervals=intervals,
                          threshold=threshold, threshold_source=source, readable=readable, note=note,
                          train_steps=int(train_steps))  # fmt: skip
