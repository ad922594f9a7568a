"""Evaluation metrics for the four task kinds, plus a percentile bootstrap confidence interval.

Everything here is a plain function on numpy arrays, so the server, the clients and offline
re-analysis of saved predictions all compute the same numbers. A metric that is undefined for
the data it is given (one class present, no comparable pairs, empty input) returns
``float("nan")`` instead of raising: a site with no positives in its validation split is a
normal event in a federation and must not stop a round. Malformed input (mismatched lengths,
labels that are not 0/1, probabilities that do not sum to one) is a bug and raises
``ValueError``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

__all__ = [
    "binary_metrics",
    "multiclass_metrics",
    "regression_metrics",
    "survival_metrics",
    "binary_auroc",
    "multiclass_auroc",
    "rmse",
    "concordance_index",
    "expected_calibration_error",
    "bootstrap_ci",
]

_NAN = float("nan")
# Rows of the event x subject comparison in concordance_index are processed in blocks so that
# memory stays at about _CINDEX_BLOCK * n booleans whatever n is.
_CINDEX_BLOCK = 1024


def _vector(x: np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D float64 array, or raise naming the argument."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (or [N, 1]); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(arr)))} non-finite values")
    return arr


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have the same length; got {lengths}")
    return next(iter(lengths.values()))


def _binary_labels(y_true: np.ndarray) -> np.ndarray:
    y = _vector(y_true, "y_true")
    bad = ~np.isin(y, (0.0, 1.0))
    if np.any(bad):
        raise ValueError(f"y_true must hold 0/1 labels; found {sorted(set(y[bad].tolist()))[:5]}")
    return y


def _probabilities(prob: np.ndarray) -> np.ndarray:
    p = _vector(prob, "prob")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(
            f"prob must lie in [0, 1]; got range [{p.min():g}, {p.max():g}] (pass sigmoid outputs, not logits)"
        )
    return p


def _binned_calibration_error(confidence: np.ndarray, outcome: np.ndarray, n_bins: int) -> float:
    """Weighted mean of |mean outcome - mean confidence| over equal-width bins of ``confidence``."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1; got {n_bins}")
    if confidence.size == 0:
        return _NAN
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are right-closed, ((m-1)/M, m/M], as in Guo et al.; a confidence of exactly 0 goes
    # into the first bin. searchsorted avoids the float error of ceil(p * M) at bin edges.
    idx = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=confidence, minlength=n_bins)
    out_sum = np.bincount(idx, weights=outcome, minlength=n_bins)
    filled = count > 0
    gap = np.abs(out_sum[filled] - conf_sum[filled]) / count[filled]
    return float(np.sum(gap * count[filled]) / confidence.size)


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, *, n_bins: int = 10) -> float:
    """Expected calibration error of binary probabilities.

    ``prob`` is the predicted probability of class 1. It is split into ``n_bins`` equal-width
    bins on [0, 1]; in each bin the fraction of positives is compared with the mean predicted
    probability, and the absolute gaps are averaged with weights proportional to bin size.

    Args:
        y_true: 0/1 labels, shape [N].
        prob: predicted probability of class 1, shape [N].
        n_bins: number of equal-width bins.

    Returns:
        ECE in [0, 1]; nan for empty input.

    References:
        Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
        https://arxiv.org/abs/1706.04599
    """
    y = _binary_labels(y_true)
    p = _probabilities(prob)
    _same_length(y_true=y, prob=p)
    return _binned_calibration_error(p, y, n_bins)


def binary_auroc(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Area under the ROC curve; nan unless both classes are present."""
    y = _binary_labels(y_true)
    p = _vector(prob, "prob")
    _same_length(y_true=y, prob=p)
    if np.unique(y).size < 2:
        return _NAN
    return float(roc_auc_score(y, p))


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, *, threshold: float = 0.5) -> dict[str, float]:
    """Ranking, threshold and calibration metrics for a binary classifier.

    Args:
        y_true: 0/1 labels, shape [N].
        prob: predicted probability of class 1, shape [N].
        threshold: a sample is predicted positive when ``prob >= threshold``.

    Returns:
        ``auroc`` and ``auprc`` (average precision), nan unless both classes are present;
        ``balanced_accuracy`` (mean of sensitivity and specificity), nan unless both classes
        are present; ``f1`` of the positive class, nan when there are no positives in either
        labels or predictions; ``ece`` (see :func:`expected_calibration_error`); ``brier``
        (mean squared error of ``prob``); ``n`` and ``n_pos``. Empty input gives nan for every
        metric and ``n = n_pos = 0``.
    """
    y = _binary_labels(y_true)
    p = _probabilities(prob)
    n = _same_length(y_true=y, prob=p)
    n_pos = float(y.sum())
    out = {k: _NAN for k in ("auroc", "auprc", "balanced_accuracy", "f1", "ece", "brier")}
    out.update(n=float(n), n_pos=n_pos)
    if n == 0:
        return out
    pred = p >= threshold
    pos = y == 1.0
    tp = float(np.sum(pred & pos))
    fp = float(np.sum(pred & ~pos))
    fn = float(np.sum(~pred & pos))
    tn = float(np.sum(~pred & ~pos))
    if 0 < n_pos < n:
        out["auroc"] = float(roc_auc_score(y, p))
        out["auprc"] = float(average_precision_score(y, p))
        out["balanced_accuracy"] = 0.5 * (tp / (tp + fn) + tn / (tn + fp))
    if 2 * tp + fp + fn > 0:
        out["f1"] = 2 * tp / (2 * tp + fp + fn)
    out["ece"] = _binned_calibration_error(p, y, 10)
    out["brier"] = float(np.mean((p - y) ** 2))
    return out


def _class_probabilities(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(prob, dtype=np.float64)
    if p.size == 0 and p.ndim < 2:
        p = p.reshape(0, 0)  # empty input is "undefined", not malformed
    if p.ndim != 2:
        raise ValueError(f"prob must be [N, K]; got shape {p.shape}")
    y = _vector(y_true, "y_true")
    _same_length(y_true=y, prob=p)
    if not np.all(np.isfinite(p)):
        raise ValueError("prob contains non-finite values")
    k = p.shape[1]
    bad = (y != np.round(y)) | (y < 0) | (y >= k)
    if np.any(bad):
        raise ValueError(f"y_true must hold integer labels in [0, {k}); found {sorted(set(y[bad].tolist()))[:5]}")
    if p.size and not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("rows of prob must sum to 1 (pass softmax outputs, not logits)")
    return y.astype(np.int64), p


def multiclass_auroc(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes present in ``y_true``; nan if fewer than two."""
    y, p = _class_probabilities(y_true, prob)
    present = np.unique(y)
    if present.size < 2:
        return _NAN
    return float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))


def multiclass_metrics(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Metrics for a K-class classifier; the prediction is the arg-max class.

    Args:
        y_true: integer labels in [0, K), shape [N].
        prob: class probabilities, shape [N, K], rows summing to 1.

    Returns:
        ``auroc``: macro one-vs-rest AUROC over the classes present in ``y_true`` (a class with
        no samples has no ROC curve), nan if fewer than two are present; ``balanced_accuracy``:
        mean recall over the classes present, nan if fewer than two are present; ``f1``: macro
        F1 over the classes present in labels or predictions (sklearn's default);
        ``accuracy``; ``ece``: top-label calibration error (confidence = max probability,
        outcome = prediction correct) over 10 equal-width bins; ``n``. Empty input gives nan.
    """
    y, p = _class_probabilities(y_true, prob)
    n = y.size
    out = {k: _NAN for k in ("auroc", "balanced_accuracy", "f1", "accuracy", "ece")}
    out["n"] = float(n)
    if n == 0:
        return out
    pred = p.argmax(axis=1)
    correct = (pred == y).astype(np.float64)
    present = np.unique(y)
    if present.size >= 2:
        out["auroc"] = float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))
        out["balanced_accuracy"] = float(np.mean([correct[y == c].mean() for c in present]))
    out["f1"] = float(f1_score(y, pred, average="macro"))
    out["accuracy"] = float(correct.mean())
    out["ece"] = _binned_calibration_error(p.max(axis=1), correct, 10)
    return out


def rmse(y_true: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared error; nan for empty input."""
    y = _vector(y_true, "y_true")
    f = _vector(pred, "pred")
    if _same_length(y_true=y, pred=f) == 0:
        return _NAN
    return float(np.sqrt(np.mean((f - y) ** 2)))


def regression_metrics(y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Error metrics for a scalar regressor.

    Args:
        y_true: targets, shape [N].
        pred: predictions, shape [N].

    Returns:
        ``mae``, ``rmse``, ``r2`` (coefficient of determination; nan when ``y_true`` is
        constant, where sklearn would report 0 or 1 by convention), and ``n``. Empty input
        gives nan.
    """
    y = _vector(y_true, "y_true")
    f = _vector(pred, "pred")
    n = _same_length(y_true=y, pred=f)
    out = {"mae": _NAN, "rmse": _NAN, "r2": _NAN, "n": float(n)}
    if n == 0:
        return out
    err = f - y
    out["mae"] = float(np.mean(np.abs(err)))
    out["rmse"] = float(np.sqrt(np.mean(err**2)))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot > 0:
        out["r2"] = 1.0 - float(np.sum(err**2)) / ss_tot
    return out


def _survival_arrays(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = _vector(time, "time")
    e = _vector(event, "event")
    r = _vector(risk, "risk")
    _same_length(time=t, event=e, risk=r)
    bad = ~np.isin(e, (0.0, 1.0))
    if np.any(bad):
        raise ValueError(f"event must hold 0/1 indicators; found {sorted(set(e[bad].tolist()))[:5]}")
    return t, e.astype(bool), r


def concordance_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index for a risk score (higher risk = earlier event).

    A pair (i, j) is comparable when subject i has an event and is known to fail first:
    ``time[i] < time[j]``, or the times are equal and j is censored (a subject censored at t
    was still event-free at t). Two events at the same time are not comparable. A comparable
    pair is concordant when ``risk[i] > risk[j]`` and counts 0.5 when the risks are tied. Cost
    is O(n_events * n) time and O(n) memory per block of events.

    Args:
        time: follow-up time, shape [N].
        event: 1 if the event was observed at ``time``, 0 if censored, shape [N].
        risk: predicted risk (e.g. Cox log-risk), shape [N].

    Returns:
        The fraction of comparable pairs ordered correctly, in [0, 1]; nan if no pair is
        comparable.

    References:
        Harrell, Califf, Pryor, Lee and Rosati, "Evaluating the Yield of Medical Tests",
        JAMA 247(18):2543-2546, 1982. https://doi.org/10.1001/jama.1982.03320430047030
    """
    t, e, r = _survival_arrays(time, event, risk)
    events = np.flatnonzero(e)
    concordant = 0.0
    comparable = 0
    for start in range(0, events.size, _CINDEX_BLOCK):
        i = events[start : start + _CINDEX_BLOCK]
        ti, ri = t[i, None], r[i, None]  # (b, 1) against (n,)
        comp = (ti < t) | ((ti == t) & ~e)
        comparable += int(comp.sum())
        concordant += float(np.sum(comp & (ri > r))) + 0.5 * float(np.sum(comp & (ri == r)))
    if comparable == 0:
        return _NAN
    return concordant / comparable


def survival_metrics(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> dict[str, float]:
    """Discrimination metrics for a survival risk score.

    Args:
        time: follow-up time, shape [N].
        event: 1 if the event was observed, 0 if censored, shape [N].
        risk: predicted risk, higher meaning earlier event, shape [N].

    Returns:
        ``c_index`` (see :func:`concordance_index`), ``n`` and ``n_events``.
    """
    t, e, r = _survival_arrays(time, event, risk)
    return {"c_index": concordance_index(t, e, r), "n": float(t.size), "n_events": float(e.sum())}


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval for ``metric(*arrays)``.

    Each resample draws N row indices with replacement and applies them to every array, so
    paired arrays (labels and scores, or a survival target [N, 2] and risks) stay aligned.
    Resamples on which the metric is nan (e.g. only one class drawn) are skipped.

    Args:
        metric: function of the arrays returning a float, e.g. :func:`binary_auroc`.
        *arrays: arrays with the same first dimension N.
        n_boot: number of resamples.
        seed: seed of the resampling generator; the same seed gives the same interval.
        level: coverage of the interval, in (0, 1).

    Returns:
        (lower, upper); (nan, nan) if fewer than 20 resamples gave a finite value.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array to resample")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    arrs = [np.asarray(a) for a in arrays]
    n = _same_length(**{f"arrays[{i}]": a for i, a in enumerate(arrs)})
    if n == 0:
        return _NAN, _NAN
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        value = float(metric(*(a[idx] for a in arrs)))
        if np.isfinite(value):
            values.append(value)
    if len(values) < 20:
        return _NAN, _NAN
    alpha = (1.0 - level) / 2.0
    lower, upper = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lower), float(upper)
