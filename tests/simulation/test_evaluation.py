"""The method summary: per-site rows, the mean over readable sites, the mean over all."""

import math

import pytest

from client.site_evaluation import SiteEvaluation
from simulation.evaluation import summarise_method


def _site(name, auroc, *, readable=True, n_pos=20):
    return SiteEvaluation(site=name, model="global", n=100, metrics={"auroc": auroc, "n_pos": float(n_pos)},
                          intervals={"auroc": [auroc - 0.1, auroc + 0.1]}, threshold=0.4,
                          threshold_source="validation Youden's J", readable=readable,
                          note="" if readable else "3 positives and 97 negatives in test")  # fmt: skip


def test_flagged_sites_are_shown_but_kept_out_of_the_headline_mean():
    summary = summarise_method([_site("a", 0.8), _site("b", 0.6), _site("c", 0.2, readable=False, n_pos=3),
                                _site("d", float("nan"))], metrics=["auroc"], pooled={"auroc": 0.9})  # fmt: skip
    assert summary.site_mean["auroc"] == pytest.approx(0.7) and summary.site_mean_n["auroc"] == 2
    assert summary.site_mean_all["auroc"] == pytest.approx((0.8 + 0.6 + 0.2) / 3)
    c = summary.per_site["c"]
    assert c.value("auroc") == 0.2 and c.interval("auroc") == pytest.approx((0.1, 0.3)) and c.readable is False
    assert c.n_pos == 3 and c.threshold == 0.4 and "3 positives" in c.note
    assert math.isnan(summary.per_site["d"].value("auroc"))
    assert summary.pooled_test["auroc"] == 0.9
