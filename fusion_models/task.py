"""Prediction tasks: what the model's output means, its loss, and how it is scored.

A :class:`Task` turns the fusion head's raw outputs ``[B, output_dim]`` into a training loss
and into numpy prediction scores, and scores those with :mod:`fusion_models.metrics`. It
holds no learned state, so clients and the server can build the same task from its config
name with :func:`make_task`.

Every loss uses only standard differentiable torch ops on the batch (no in-place writes, no
``.item()``, no data-dependent Python branches), so it runs unchanged under Opacus'
per-sample-gradient modes, which compute the loss on the whole batch and take per-sample
gradients inside the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fusion_models.metrics import (
    binary_auroc,
    binary_metrics,
    concordance_index,
    multiclass_auroc,
    multiclass_metrics,
    regression_metrics,
    rmse,
    survival_metrics,
)
from fusion_models.registry import Registry

__all__ = [
    "Task",
    "BinaryTask",
    "MulticlassTask",
    "RegressionTask",
    "SurvivalTask",
    "TASKS",
    "make_task",
    "cox_partial_likelihood_loss",
]

TASKS: Registry[type["Task"]] = Registry("task")


def _single_output(outputs: torch.Tensor, task: str) -> torch.Tensor:
    """Return the [B] column of a one-output head; a bare [B] vector is accepted as well."""
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return outputs[:, 0]
    if outputs.ndim == 1:
        return outputs
    raise ValueError(f"{task} task expects outputs of shape [B, 1]; got {tuple(outputs.shape)}")


def _check_batch(outputs: torch.Tensor, target: torch.Tensor, task: str) -> None:
    if outputs.shape[0] != target.shape[0]:
        raise ValueError(f"{task} task: outputs have batch size {outputs.shape[0]} but target has {target.shape[0]}")


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()


def cox_partial_likelihood_loss(log_risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood with Breslow's handling of tied event times.

    ``loss = -(1 / d) * sum_{i: event_i = 1} [eta_i - log sum_{j: t_j >= t_i} exp(eta_j)]``
    where d is the number of events in the batch. Under Breslow's approximation every event
    tied at time t sees the full risk set {j: t_j >= t}, tied events included. The log-sums
    are taken with a cumulative logsumexp over subjects sorted by descending time, so the
    cost is O(B log B) and large log-risks do not overflow. A batch without events returns
    0 that is still attached to the graph.

    Note that the partial likelihood is not a sum of per-sample terms (each risk set mixes
    subjects), so Opacus' per-sample clipping bounds each subject's gradient contribution
    within the batch but not exactly the effect of removing that subject on the others.

    Args:
        log_risk: predicted log-risk eta, shape [B], differentiable.
        time: follow-up times, shape [B].
        event: 1 for an observed event, 0 for censoring, shape [B].

    Returns:
        Scalar loss tensor.

    References:
        Cox, "Regression Models and Life-Tables", JRSS B 34(2):187-220, 1972.
        Breslow, "Covariance Analysis of Censored Survival Data", Biometrics 30(1):89-99, 1974.
        https://doi.org/10.2307/2529620
    """
    # half precision would lose the cumulative sums; float32/float64 are kept as they are
    eta = log_risk.float() if log_risk.dtype in (torch.float16, torch.bfloat16) else log_risk
    time = time.detach().to(eta.device, eta.dtype)
    event = event.detach().to(eta.device, eta.dtype)
    order = torch.argsort(time, descending=True, stable=True)
    time_desc = time[order]
    eta_desc = eta[order]
    event_desc = event[order]
    # log sum_{j <= k} exp(eta_j) in descending-time order; for a tie group the risk set runs to
    # the group's last member, whose index is (number of subjects with t >= t_k) - 1.
    cum = torch.logcumsumexp(eta_desc, dim=0)
    n_at_risk = time.numel() - torch.searchsorted(time_desc.flip(0).contiguous(), time_desc, side="left")
    log_risk_set = cum[n_at_risk - 1]
    n_events = event_desc.sum()
    return -((eta_desc - log_risk_set) * event_desc).sum() / n_events.clamp_min(1.0)


class Task(ABC):
    """What the model predicts: output size, loss, prediction scores and metrics.

    Args:
        num_classes: number of classes; used by classification tasks, ignored by others.
    """

    name: str
    headline: str
    higher_is_better: bool

    def __init__(self, num_classes: int = 2) -> None:
        self.num_classes = int(num_classes)

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Width of the head's output, ``outputs.shape[1]``."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss for a batch, averaged over the batch."""

    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each row's own loss, ``[B]``, whose mean is :meth:`loss` (ghost clipping needs it)."""
        raise ValueError(f"task {self.name!r} has no per-sample loss: its loss couples the rows of a batch")

    @abstractmethod
    def scores(self, outputs: torch.Tensor) -> np.ndarray:
        """Detached numpy prediction scores that :meth:`metrics` consumes."""

    @abstractmethod
    def metrics(self, target: np.ndarray, scores: np.ndarray, *, threshold: float | None = None) -> dict[str, float]:
        """Metric name -> value for targets and :meth:`scores` of a whole split.

        ``threshold`` is the decision threshold of threshold metrics (binary tasks only;
        other tasks ignore it); None means 0.5.
        """

    @abstractmethod
    def headline_fn(self) -> Callable[[np.ndarray, np.ndarray], float]:
        """``(target, scores) -> headline metric``, cheap enough for :func:`bootstrap_ci`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes})"


@TASKS.register("binary")
class BinaryTask(Task):
    """Binary classification with one logit; loss is BCE-with-logits.

    Args:
        num_classes: must be 2 (use ``"multiclass"`` for more).
        pos_weight: weight of positive samples in the loss (e.g. n_neg / n_pos for rare
            positives); None weighs both classes equally.
    """

    name = "binary"
    headline = "auroc"
    higher_is_better = True

    def __init__(self, num_classes: int = 2, *, pos_weight: float | None = None) -> None:
        if num_classes != 2:
            raise ValueError(f"binary task has 2 classes; got num_classes={num_classes} (use task 'multiclass')")
        if pos_weight is not None and not pos_weight > 0:
            raise ValueError(f"pos_weight must be > 0; got {pos_weight}")
        super().__init__(num_classes)
        self.pos_weight = None if pos_weight is None else float(pos_weight)

    @property
    def output_dim(self) -> int:
        return 1

    def _bce(self, outputs: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
        logits = _single_output(outputs, self.name)
        _check_batch(logits, target, self.name)
        pos_weight = None
        if self.pos_weight is not None:
            pos_weight = torch.tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        target = target.to(logits.dtype).reshape(logits.shape)
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction=reduction)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._bce(outputs, target, "mean")

    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._bce(outputs, target, "none").reshape(-1)

    def scores(self, outputs: torch.Tensor) -> np.ndarray:
        return _to_numpy(torch.sigmoid(_single_output(outputs.detach(), self.name)))

    def metrics(self, target: np.ndarray, scores: np.ndarray, *, threshold: float | None = None) -> dict[str, float]:
        return binary_metrics(target, scores, threshold=0.5 if threshold is None else float(threshold))

    def headline_fn(self) -> Callable[[np.ndarray, np.ndarray], float]:
        return binary_auroc

    def __repr__(self) -> str:
        return f"BinaryTask(pos_weight={self.pos_weight})"


@TASKS.register("multiclass")
class MulticlassTask(Task):
    """K-class classification with K logits; loss is cross-entropy.

    Args:
        num_classes: number of classes K >= 2.
    """

    name = "multiclass"
    headline = "auroc"
    higher_is_better = True

    def __init__(self, num_classes: int = 2) -> None:
        if num_classes < 2:
            raise ValueError(f"multiclass task needs num_classes >= 2; got {num_classes}")
        super().__init__(num_classes)

    @property
    def output_dim(self) -> int:
        return self.num_classes

    def _logits(self, outputs: torch.Tensor) -> torch.Tensor:
        if outputs.ndim != 2 or outputs.shape[1] != self.num_classes:
            raise ValueError(
                f"multiclass task expects outputs of shape [B, {self.num_classes}]; got {tuple(outputs.shape)}"
            )
        return outputs

    def _cross_entropy(self, outputs: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
        logits = self._logits(outputs)
        _check_batch(logits, target, self.name)
        return F.cross_entropy(logits, target.long().reshape(-1), reduction=reduction)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._cross_entropy(outputs, target, "mean")

    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._cross_entropy(outputs, target, "none")

    def scores(self, outputs: torch.Tensor) -> np.ndarray:
        # softmax in float64 so rows sum to 1 within the tolerance multiclass_metrics checks
        return torch.softmax(self._logits(outputs.detach()).to("cpu", torch.float64), dim=1).numpy()

    def metrics(self, target: np.ndarray, scores: np.ndarray, *, threshold: float | None = None) -> dict[str, float]:
        return multiclass_metrics(target, scores)

    def headline_fn(self) -> Callable[[np.ndarray, np.ndarray], float]:
        return multiclass_auroc


@TASKS.register("regression")
class RegressionTask(Task):
    """Scalar regression with one output; loss is mean squared error.

    Args:
        num_classes: ignored.
    """

    name = "regression"
    headline = "rmse"
    higher_is_better = False

    @property
    def output_dim(self) -> int:
        return 1

    def _mse(self, outputs: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
        pred = _single_output(outputs, self.name)
        _check_batch(pred, target, self.name)
        return F.mse_loss(pred, target.to(pred.dtype).reshape(pred.shape), reduction=reduction)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._mse(outputs, target, "mean")

    def per_sample_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._mse(outputs, target, "none").reshape(-1)

    def scores(self, outputs: torch.Tensor) -> np.ndarray:
        return _to_numpy(_single_output(outputs, self.name))

    def metrics(self, target: np.ndarray, scores: np.ndarray, *, threshold: float | None = None) -> dict[str, float]:
        return regression_metrics(target, scores)

    def headline_fn(self) -> Callable[[np.ndarray, np.ndarray], float]:
        return rmse


def _split_survival_target(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(target, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(f"survival target must be [N, 2] = (time, event); got shape {t.shape}")
    return t[:, 0], t[:, 1]


def _survival_c_index(target: np.ndarray, risk: np.ndarray) -> float:
    """Module-level (picklable) headline for the survival task: c-index of (time, event) rows."""
    time, event = _split_survival_target(target)
    return concordance_index(time, event, risk)


@TASKS.register("survival")
class SurvivalTask(Task):
    """Right-censored survival with one log-risk output; loss is the Cox partial likelihood.

    Targets are float [B, 2] rows of (time, event). See :func:`cox_partial_likelihood_loss`.

    Args:
        num_classes: ignored.
    """

    name = "survival"
    headline = "c_index"
    higher_is_better = True

    @property
    def output_dim(self) -> int:
        return 1

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_risk = _single_output(outputs, self.name)
        if target.ndim != 2 or target.shape[1] != 2:
            raise ValueError(f"survival target must be [B, 2] = (time, event); got {tuple(target.shape)}")
        _check_batch(log_risk, target, self.name)
        return cox_partial_likelihood_loss(log_risk, target[:, 0], target[:, 1])

    def scores(self, outputs: torch.Tensor) -> np.ndarray:
        return _to_numpy(_single_output(outputs, self.name))

    def metrics(self, target: np.ndarray, scores: np.ndarray, *, threshold: float | None = None) -> dict[str, float]:
        time, event = _split_survival_target(target)
        return survival_metrics(time, event, scores)

    def headline_fn(self) -> Callable[[np.ndarray, np.ndarray], float]:
        return _survival_c_index


def make_task(name: str, *, num_classes: int = 2, **options: object) -> Task:
    """Build the task registered as ``name``.

    Args:
        name: one of ``TASKS.names()``; an unknown name raises a KeyError listing them.
        num_classes: number of classes for classification tasks.
        **options: extra constructor arguments, e.g. ``pos_weight`` for ``"binary"``.
    """
    return TASKS.get(name)(num_classes=num_classes, **options)
