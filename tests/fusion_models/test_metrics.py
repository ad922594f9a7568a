"""Tests for fusion_models.metrics: against sklearn, hand-computed values and brute force."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from fusion_models.metrics import (
    binary_auroc,
    binary_metrics,
    bootstrap_ci,
    concordance_index,
    expected_calibration_error,
    multiclass_auroc,
    multiclass_metrics,
    regression_metrics,
    rmse,
    survival_metrics,
)


def _binary_data(n: int, seed: int, pos_rate: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < pos_rate).astype(float)
    logit = 1.5 * (y - 0.5) + rng.normal(size=n)
    return y, 1.0 / (1.0 + np.exp(-logit))


def _brute_force_c_index(time, event, risk) -> float:
    num, den = 0.0, 0
    for i in range(len(time)):
        if not event[i]:
            continue
        for j in range(len(time)):
            if i == j:
                continue
            if time[i] < time[j] or (time[i] == time[j] and not event[j]):
                den += 1
                num += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    return num / den if den else math.nan


# ---------------------------------------------------------------------------- binary


@pytest.mark.parametrize("n, seed, threshold", [(50, 0, 0.5), (200, 1, 0.5), (500, 2, 0.3), (80, 3, 0.7)])
def test_binary_metrics_match_sklearn(n, seed, threshold):
    y, p = _binary_data(n, seed)
    m = binary_metrics(y, p, threshold=threshold)
    pred = (p >= threshold).astype(float)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert m["auprc"] == pytest.approx(average_precision_score(y, p))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["ece"] == pytest.approx(expected_calibration_error(y, p))
    assert m["n"] == n and m["n_pos"] == y.sum()
    assert binary_auroc(y, p) == pytest.approx(m["auroc"])


@pytest.mark.parametrize(
    "y, p, nan_keys, finite_keys",
    [
        ([0, 0, 0], [0.1, 0.6, 0.3], {"auroc", "auprc", "balanced_accuracy"}, {"f1", "ece", "brier"}),
        ([1, 1], [0.9, 0.4], {"auroc", "auprc", "balanced_accuracy"}, {"f1", "ece", "brier"}),
        ([0, 0], [0.1, 0.2], {"auroc", "auprc", "balanced_accuracy", "f1"}, {"ece", "brier"}),  # f1 0/0
        ([], [], {"auroc", "auprc", "balanced_accuracy", "f1", "ece", "brier"}, set()),
    ],
)
def test_binary_metrics_undefined_cases_are_nan(y, p, nan_keys, finite_keys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # undefined cases must not go through sklearn's warnings
        m = binary_metrics(np.array(y, dtype=float), np.array(p, dtype=float))
    for k in nan_keys:
        assert math.isnan(m[k]), k
    for k in finite_keys:
        assert math.isfinite(m[k]), k
    assert m["n"] == len(y)


@pytest.mark.parametrize(
    "y, p, message",
    [
        ([0, 2], [0.1, 0.2], "0/1"),
        ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
        ([0, 1, 1], [0.1, 0.2], "same length"),
        ([0, 1], [0.1, np.nan], "non-finite"),
    ],
)
def test_binary_metrics_reject_malformed_input(y, p, message):
    with pytest.raises(ValueError, match=message):
        binary_metrics(np.array(y, dtype=float), np.array(p, dtype=float))


# ---------------------------------------------------------------------------- ECE


def test_ece_of_perfectly_calibrated_toy_is_zero():
    # In each bin, every sample has probability c and exactly a fraction c of them are positive.
    y, p = [], []
    for c in (0.05, 0.25, 0.45, 0.65, 0.85):
        n_pos = int(round(c * 100))
        y += [1] * n_pos + [0] * (100 - n_pos)
        p += [c] * 100
    assert expected_calibration_error(np.array(y, float), np.array(p)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "y, p, n_bins, expected",
    [
        ([1, 0, 1, 0], [0.9, 0.9, 0.9, 0.9], 10, 0.4),  # one bin: |0.5 - 0.9|
        ([1, 1, 0, 0], [0.9, 0.9, 0.1, 0.1], 10, 0.1),  # two bins, each off by 0.1
        # weighted: bin (0.2, 0.3] has 3 samples, acc 1/3, conf 0.3; bin (0.7, 0.8] has 1, acc 1, conf 0.8
        ([1, 0, 0, 1], [0.3, 0.3, 0.3, 0.8], 10, 0.75 * abs(1 / 3 - 0.3) + 0.25 * 0.2),
        ([1, 0], [0.0, 1.0], 10, 1.0),  # edge probabilities land in the first / last bin
        ([1, 0, 1, 0], [0.2, 0.2, 0.8, 0.8], 1, 0.0),  # one bin: mean prob 0.5 = accuracy 0.5
    ],
)
def test_ece_of_known_miscalibrated_cases(y, p, n_bins, expected):
    assert expected_calibration_error(np.array(y, float), np.array(p), n_bins=n_bins) == pytest.approx(expected)


def test_ece_edge_cases():
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(np.array([1.0]), np.array([0.5]), n_bins=0)


# ---------------------------------------------------------------------------- multiclass


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n, k, seed", [(60, 3, 0), (300, 5, 1), (40, 2, 2)])
def test_multiclass_metrics_match_sklearn(n, k, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k  # every class present
    rng.shuffle(y)
    prob = _softmax(rng.normal(size=(n, k)) + 2.0 * np.eye(k)[y])
    m = multiclass_metrics(y, prob)
    pred = prob.argmax(1)
    sk_auroc = roc_auc_score(y, prob, multi_class="ovr", average="macro") if k > 2 else roc_auc_score(y, prob[:, 1])
    assert m["auroc"] == pytest.approx(sk_auroc)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    conf = prob.max(1)
    assert m["ece"] == pytest.approx(expected_calibration_error((pred == y).astype(float), conf))
    assert m["n"] == n
    assert multiclass_auroc(y, prob) == pytest.approx(m["auroc"])


def test_multiclass_auroc_averages_over_present_classes_only():
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 2, 2, 2, 0, 2, 0])  # class 1 absent
    prob = _softmax(rng.normal(size=(8, 3)))
    expected = np.mean([roc_auc_score(y == 0, prob[:, 0]), roc_auc_score(y == 2, prob[:, 2])])
    assert multiclass_metrics(y, prob)["auroc"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "y, prob", [(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]])), (np.array([]), np.empty((0, 3)))]
)
def test_multiclass_metrics_undefined_cases_are_nan(y, prob):
    m = multiclass_metrics(y, prob)
    assert math.isnan(m["auroc"]) and math.isnan(m["balanced_accuracy"])
    assert math.isnan(multiclass_auroc(y, prob))


@pytest.mark.parametrize(
    "y, prob, message",
    [
        (np.array([0, 3]), np.full((2, 3), 1 / 3), "integer labels"),
        (np.array([0, 1]), np.array([[2.0, -1.0], [0.5, 0.5]]) * 3, "sum to 1"),
        (np.array([0, 1]), np.array([0.5, 0.5]), r"\[N, K\]"),
    ],
)
def test_multiclass_metrics_reject_malformed_input(y, prob, message):
    with pytest.raises(ValueError, match=message):
        multiclass_metrics(y, prob)


# ---------------------------------------------------------------------------- regression


@pytest.mark.parametrize("n, seed", [(10, 0), (200, 1)])
def test_regression_metrics_match_sklearn(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    pred = y + 0.3 * rng.normal(size=n)
    m = regression_metrics(y, pred)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred))
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, pred)))
    assert m["r2"] == pytest.approx(r2_score(y, pred))
    assert m["n"] == n
    assert rmse(y, pred) == pytest.approx(m["rmse"])


def test_regression_metrics_undefined_cases_are_nan():
    m = regression_metrics(np.array([2.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    assert math.isnan(m["r2"]) and m["mae"] == pytest.approx(2 / 3)
    empty = regression_metrics(np.array([]), np.array([]))
    assert all(math.isnan(empty[k]) for k in ("mae", "rmse", "r2")) and empty["n"] == 0
    assert math.isnan(rmse(np.array([]), np.array([])))


# ---------------------------------------------------------------------------- survival


def _survival_data(n: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-risk))
    event = (rng.random(n) < 0.6).astype(float)
    if ties:  # coarse times and risks create ties of every kind
        return np.ceil(time * 3), event, np.round(risk)
    return time, event, risk + 0.5 * rng.normal(size=n)  # noisy risk: c-index well below 1


@pytest.mark.parametrize(
    "n, seed, ties", [(30, 0, False), (60, 1, True), (200, 2, True), (5, 3, False), (2000, 4, True)]
)
def test_concordance_index_matches_brute_force(n, seed, ties):
    time, event, risk = _survival_data(n, seed, ties)
    if n > 500:  # keep the Python pair loop short; test_..._spans_blocks covers large n
        idx = np.random.default_rng(seed).choice(n, 300, replace=False)
        time, event, risk = time[idx], event[idx], risk[idx]
    assert concordance_index(time, event, risk) == pytest.approx(_brute_force_c_index(time, event, risk))


def test_concordance_index_large_input_spans_blocks():
    time, event, risk = _survival_data(2500, 5, True)
    # pairwise counting over one full matrix gives the reference
    e = event.astype(bool)
    comp = e[:, None] & ((time[:, None] < time[None, :]) | ((time[:, None] == time[None, :]) & ~e[None, :]))
    num = np.sum(comp & (risk[:, None] > risk[None, :])) + 0.5 * np.sum(comp & (risk[:, None] == risk[None, :]))
    assert concordance_index(time, event, risk) == pytest.approx(num / comp.sum())


@pytest.mark.parametrize(
    "time, event, risk, expected",
    [
        ([1, 2, 3], [1, 1, 1], [3, 2, 1], 1.0),  # perfectly ordered
        ([1, 2, 3], [1, 1, 1], [1, 2, 3], 0.0),  # reversed
        ([1, 2, 3], [1, 1, 1], [5, 5, 5], 0.5),  # all risks tied
        ([1, 1], [1, 0], [2, 1], 1.0),  # event vs censored at the same time is comparable
        ([1, 2], [0, 1], [2, 1], math.nan),  # censored first: no comparable pair
        ([1, 1], [1, 1], [2, 1], math.nan),  # tied events are not comparable
        ([], [], [], math.nan),
    ],
)
def test_concordance_index_hand_cases(time, event, risk, expected):
    c = concordance_index(np.array(time, float), np.array(event, float), np.array(risk, float))
    if math.isnan(expected):
        assert math.isnan(c)
    else:
        assert c == pytest.approx(expected)


def test_survival_metrics_keys_and_validation():
    time, event, risk = _survival_data(50, 0, False)
    m = survival_metrics(time, event, risk)
    assert m["c_index"] == pytest.approx(concordance_index(time, event, risk))
    assert m["n"] == 50 and m["n_events"] == event.sum()
    with pytest.raises(ValueError, match="0/1"):
        survival_metrics(time, event * 2, risk)


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_point_estimate_and_narrows_with_more_data():
    widths = []
    for n in (100, 1600):
        y, p = _binary_data(n, seed=7)
        lo, hi = bootstrap_ci(binary_auroc, y, p, n_boot=200, seed=0)
        assert lo <= binary_auroc(y, p) <= hi
        widths.append(hi - lo)
    assert widths[1] < 0.6 * widths[0]  # width shrinks ~ 1 / sqrt(n): expect about a quarter


def test_bootstrap_ci_is_deterministic_per_seed():
    y, p = _binary_data(120, seed=3)
    a = bootstrap_ci(binary_auroc, y, p, seed=11)
    assert bootstrap_ci(binary_auroc, y, p, seed=11) == a
    assert bootstrap_ci(binary_auroc, y, p, seed=12) != a


def test_bootstrap_ci_keeps_rows_of_2d_arrays_together():
    time, event, risk = _survival_data(150, 1, False)
    target = np.stack([time, event], axis=1)

    def c_index(t, r):
        return concordance_index(t[:, 0], t[:, 1], r)

    lo, hi = bootstrap_ci(c_index, target, risk, n_boot=100, level=0.9)
    assert lo <= c_index(target, risk) <= hi


@pytest.mark.parametrize(
    "y, p",
    [
        (np.array([0.0, 0, 0, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4, 0.9])),  # ~1/3 of resamples lack a positive
        (np.array([0.0] * 30), np.linspace(0, 1, 30)),  # always one class: every resample is nan
        (np.array([]), np.array([])),
    ],
)
def test_bootstrap_ci_skips_nan_resamples(y, p):
    lo, hi = bootstrap_ci(binary_auroc, y, p, n_boot=100)
    if y.size and y.sum() > 0:
        assert lo == hi == 1.0  # the one positive outranks every negative in every valid resample
    else:
        assert math.isnan(lo) and math.isnan(hi)


def test_bootstrap_ci_nan_when_fewer_than_20_valid_resamples():
    calls = iter(range(1000))

    def mostly_nan(_):
        return 1.0 if next(calls) % 10 == 0 else math.nan  # 10 of 100 resamples are valid

    assert all(math.isnan(v) for v in bootstrap_ci(mostly_nan, np.arange(10.0), n_boot=100))


@pytest.mark.parametrize("kwargs, message", [({"level": 1.0}, "level"), ({"n_boot": 0}, "n_boot")])
def test_bootstrap_ci_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(rmse, np.zeros(5), np.zeros(5), **kwargs)
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ci(rmse, np.zeros(5), np.zeros(4))
