"""The figures a site reports: threshold rule, bootstrap intervals, readability."""

import numpy as np
import pytest

from client import site_evaluation
from client.site_evaluation import (
    MIN_READABLE,
    SiteEvaluation,
    bootstrap_metrics,
    choose_threshold,
    rank_interval,
    readability,
)
from fusion_models.task import make_task


def test_threshold_maximises_balanced_accuracy_on_validation():
    target = np.array([0, 0, 0, 0, 1, 1, 0, 1])
    scores = np.array([0.05, 0.10, 0.12, 0.20, 0.22, 0.30, 0.35, 0.40])
    threshold, source = choose_threshold(make_task("binary"), target, scores)
    # by hand: predicting positive at >= 0.22 catches all 3 positives with 1 false positive
    # (J = 1 - 1/5 = 0.8); every other cut scores lower.
    assert threshold == pytest.approx(0.22) and "Youden" in source
    for cut in np.unique(scores):
        pred = scores >= cut
        j = pred[target == 1].mean() - pred[target == 0].mean()
        assert j <= 0.8 + 1e-12


def test_threshold_falls_back_to_half_when_validation_lacks_a_class():
    assert choose_threshold(make_task("binary"), np.zeros(5), np.linspace(0, 1, 5))[0] == 0.5
    assert choose_threshold(make_task("multiclass", num_classes=3), np.zeros(3), np.ones((3, 3)) / 3)[0] is None


def test_bootstrap_interval_matches_a_hand_computed_resampling():
    task = make_task("binary")
    rng = np.random.default_rng(0)
    target = (rng.random(80) < 0.4).astype(float)
    scores = np.clip(target * 0.3 + rng.random(80) * 0.7, 0, 1)
    got = bootstrap_metrics(task, target, scores, n_boot=60, seed=7)
    # the same resamples drawn by hand
    draw = np.random.default_rng(7)
    aurocs = []
    for _ in range(60):
        index = draw.integers(0, 80, size=80)
        aurocs.append(task.metrics(target[index], scores[index])["auroc"])
    assert got["auroc"] == pytest.approx([np.quantile(aurocs, 0.025), np.quantile(aurocs, 0.975)])
    assert got["auroc"][0] < task.metrics(target, scores)["auroc"] < got["auroc"][1]


def test_no_interval_from_too_few_defined_resamples():
    task = make_task("binary")
    target = np.array([1.0] + [0.0] * 199)  # one positive: most resamples have no positive at all
    # about 63 % of resamples hold the positive: of 25, fewer than the 20 an interval needs
    got = bootstrap_metrics(task, target, np.linspace(0, 1, 200), n_boot=25, seed=0)
    assert "auroc" not in got


@pytest.mark.parametrize(
    ("task", "target", "readable"),
    [
        ("binary", [1] * MIN_READABLE + [0] * MIN_READABLE, True),
        ("binary", [1] * (MIN_READABLE - 1) + [0] * 50, False),
        ("binary", [1] * 50 + [0] * (MIN_READABLE - 1), False),
        ("survival", [[t, 1] for t in range(MIN_READABLE)] + [[99, 0]] * 5, True),
        ("survival", [[t, 1] for t in range(MIN_READABLE - 1)] + [[99, 0]] * 50, False),
    ],
)
def test_readability_rule(task, target, readable):
    ok, note = readability(make_task(task), np.asarray(target, dtype=float))
    assert ok is readable and (note == "") is readable


def test_site_evaluation_round_trips_and_refuses_missing_keys():
    e = SiteEvaluation(site="a", model="global", n=3, metrics={"auroc": float("nan"), "f1": 0.5},
                       intervals={"f1": [0.1, 0.9]}, threshold=0.3, threshold_source="x")  # fmt: skip
    data = e.to_dict()
    assert data["metrics"]["auroc"] is None
    back = SiteEvaluation.from_dict(data)
    assert back.metrics["f1"] == 0.5 and np.isnan(back.metrics["auroc"]) and back.threshold == 0.3
    del data["threshold"]
    with pytest.raises(ValueError, match="threshold"):
        SiteEvaluation.from_dict(data)


@pytest.mark.parametrize(("value", "trials"), [(0.5, 10), (0.8, 5), (0.0, 5), (1.0, 1), (1.0, 7)])
def test_rank_interval_is_the_exact_binomial_interval(value, trials):
    from scipy.stats import binomtest

    expected = binomtest(round(value * trials), trials).proportion_ci(method="exact")
    assert np.allclose(rank_interval(value, trials), [expected.low, expected.high])
    assert rank_interval(1.0, 1) == pytest.approx([0.025, 1.0])  # one positive tells almost nothing
    assert rank_interval(0.7, 0) is None and rank_interval(float("nan"), 5) is None


def test_a_flagged_site_gets_the_exact_interval_where_the_bootstrap_collapses(monkeypatch):
    # One positive, ranked above all 30 negatives: every bootstrap resample that holds it reads 1.0.
    target = np.array([1.0] + [0.0] * 30)
    scores = np.array([0.9] + list(np.linspace(0.1, 0.5, 30)))
    monkeypatch.setattr(site_evaluation, "predict", lambda model, dataset, task, device: (target, scores, 0.3))
    evaluation = site_evaluation.evaluate_at_site(None, site="tiny", model_name="global", val_set=None, test_set=None,
                                                  task=make_task("binary"), device=None, n_boot=200, seed=0)  # fmt: skip
    assert evaluation.readable is False and evaluation.metrics["auroc"] == 1.0
    bootstrap = bootstrap_metrics(make_task("binary"), target, scores, n_boot=200, seed=0, threshold=0.5)
    assert bootstrap["auroc"] == pytest.approx([1.0, 1.0]), "the degenerate case this guards against"
    assert evaluation.intervals["auroc"] == pytest.approx([0.025, 1.0])
    assert "auroc interval exact over 1 trial(s), not bootstrap" in evaluation.note


def test_a_readable_site_keeps_its_bootstrap_interval(monkeypatch):
    rng = np.random.default_rng(1)
    target = np.array([1.0] * 15 + [0.0] * 40)
    scores = np.clip(target * 0.3 + rng.uniform(0, 0.7, len(target)), 0, 1)
    monkeypatch.setattr(site_evaluation, "predict", lambda model, dataset, task, device: (target, scores, 0.3))
    evaluation = site_evaluation.evaluate_at_site(None, site="big", model_name="global", val_set=None, test_set=None,
                                                  task=make_task("binary"), device=None, n_boot=100, seed=4)  # fmt: skip
    expected = bootstrap_metrics(make_task("binary"), target, scores, n_boot=100, seed=4,
                                 threshold=evaluation.threshold)  # fmt: skip
    assert evaluation.readable and evaluation.intervals["auroc"] == expected["auroc"] and evaluation.note == ""


def test_rank_trials_are_the_smaller_class_or_the_events():
    assert site_evaluation.rank_trials(make_task("binary"), np.array([1.0, 0, 0, 0, 1])) == 2
    survival = np.array([[5.0, 1], [7, 0], [9, 1], [11, 0], [12, 1]])
    assert site_evaluation.rank_trials(make_task("survival"), survival) == 3
    assert site_evaluation.rank_trials(make_task("multiclass", num_classes=3), np.array([0.0, 1, 2])) == 0
