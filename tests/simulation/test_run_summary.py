"""The typed run summary: what summary.json holds (one repeat, or several), read back the same,
and refused when it is of another version."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from simulation.run_summary import (
    SUMMARY_VERSION,
    MethodResult,
    MethodSpread,
    PairedComparison,
    RepeatsSummary,
    RunSummary,
    SitePartition,
    SiteResult,
    SiteWins,
    Spread,
)

NAN = float("nan")


def _summary() -> RunSummary:
    sites = {
        "alpha": SiteResult(metrics={"auroc": 0.8, "f1": 0.5}, intervals={"auroc": (0.7, 0.9)}, n=50, n_pos=12,
                            threshold=0.31, threshold_source="validation Youden's J", train_steps=40),
        "beta": SiteResult(metrics={"auroc": NAN, "f1": 0.0}, n=20, n_pos=0, readable=False,
                           note="0 positives and 20 negatives in test", train_steps=12),
    }  # fmt: skip
    federated = MethodResult(per_site=sites, site_mean={"auroc": 0.8, "f1": 0.5}, site_mean_n={"auroc": 1, "f1": 1},
                             site_mean_all={"auroc": 0.8, "f1": 0.25}, pooled_test={"auroc": 0.77, "f1": NAN},
                             seconds=12.3, source="reported by the sites")  # fmt: skip
    return RunSummary(name="toy", task="binary", headline="auroc", metrics=["auroc", "f1"],
                      methods={"federated": federated}, classes=["benign", "malignant"], rounds=3, local_epochs=1.0,
                      partition={"alpha": SitePartition(train=100, val=20, test=50, labels={"benign": 150, "malignant": 20},
                                                        modalities={"image": 170, "tabular": 170})},
                      sites=["alpha", "beta"], warnings=["a warning"])  # fmt: skip


def test_summary_json_reads_back_the_same_and_nan_is_null(tmp_path: Path):
    summary = _summary()
    path = tmp_path / "summary.json"
    path.write_text(summary.to_json())
    raw = json.loads(path.read_text())  # strict JSON: NaN was written as null
    assert raw["version"] == SUMMARY_VERSION
    assert raw["methods"]["federated"]["per_site"]["beta"]["auroc"] is None
    assert raw["methods"]["federated"]["per_site"]["alpha"]["auroc_ci"] == [0.7, 0.9]
    assert raw["methods"]["federated"]["site_mean"]["auroc"] == 0.8
    back = RunSummary.load(path)
    assert math.isnan(back.methods["federated"].per_site["beta"].value("auroc"))
    assert math.isnan(back.methods["federated"].pooled("f1"))
    assert back.to_dict() == summary.to_dict()
    alpha = back.methods["federated"].per_site["alpha"]
    assert (alpha.interval("auroc"), alpha.n_pos, alpha.threshold, alpha.train_steps) == ((0.7, 0.9), 12, 0.31, 40)
    assert back.partition["alpha"].labels == {"benign": 150, "malignant": 20}


def test_a_summary_of_another_version_is_refused_naming_the_file(tmp_path: Path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({**_summary().to_dict(), "version": SUMMARY_VERSION + 1}))
    with pytest.raises(ValueError, match=rf"{path}: summary version {SUMMARY_VERSION + 1}, expected {SUMMARY_VERSION}"):
        RunSummary.load(path)


def test_site_names_fall_back_to_the_methods_and_the_partition():
    summary = _summary()
    assert summary.site_names() == ["alpha", "beta"]
    assert replace(summary, sites=[]).site_names() == ["alpha", "beta"]  # alpha and beta from the method


def _repeats() -> RepeatsSummary:
    def run(auroc: float) -> RunSummary:  # every figure defined, so that it reads back equal
        site = SiteResult(metrics={"auroc": auroc}, n=30, n_pos=10, train_steps=5)
        method = MethodResult(per_site={"alpha": site}, site_mean={"auroc": auroc}, site_mean_n={"auroc": 1},
                              site_mean_all={"auroc": auroc}, pooled_test={"auroc": auroc}, seconds=1.5)  # fmt: skip
        return RunSummary(name="toy", task="binary", headline="auroc", metrics=["auroc"],
                          methods={"federated": method, "pooled": method}, sites=["alpha"])  # fmt: skip

    spread = MethodSpread(site_mean={"auroc": Spread(0.75, 0.05, 2)}, site_mean_all={"auroc": Spread(0.75, 0.05, 2)},
                          per_site={"alpha": Spread(0.75, 0.05, 2)}, readable={"alpha": True})  # fmt: skip
    wins = SiteWins(first=0, second=1, ties=1, readable=True)
    paired = PairedComparison(first="federated", second="pooled", metric="auroc", differences=[0.0, 0.0], mean=0.0,
                              std=0.0, n=2, per_site={"alpha": wins})  # fmt: skip
    return RepeatsSummary(name="toy", dataset="synthetic", task="binary", headline="auroc", higher_is_better=True,
                          seeds=[7, 8], aggregate={"federated": spread, "pooled": spread}, paired=[paired],
                          runs=[run(0.7), run(0.8)])  # fmt: skip


def test_a_repeats_summary_reads_back_equal_with_the_layout_it_always_had(tmp_path: Path):
    summary = _repeats()
    raw = summary.to_dict()
    assert list(raw) == ["version", "name", "dataset", "task", "headline", "higher_is_better", "repeats", "seeds",
                         "aggregate", "paired", "runs"]  # fmt: skip
    assert raw["version"] == SUMMARY_VERSION and raw["repeats"] == summary.repeats == 2
    assert raw["aggregate"]["federated"] == {"site_mean": {"auroc": {"mean": 0.75, "std": 0.05, "n": 2}},
                                             "site_mean_all": {"auroc": {"mean": 0.75, "std": 0.05, "n": 2}},
                                             "per_site": {"alpha": {"mean": 0.75, "std": 0.05, "n": 2}},
                                             "readable": {"alpha": True}}  # fmt: skip
    assert raw["runs"][0] == summary.runs[0].to_dict()
    assert RepeatsSummary.is_repeats(raw) and not RepeatsSummary.is_repeats(summary.runs[0].to_dict())
    assert RepeatsSummary.from_dict(json.loads(json.dumps(raw))) == summary
    path = tmp_path / "summary.json"
    path.write_text(summary.to_json())
    assert RepeatsSummary.load(path) == summary


def test_a_paired_comparison_keys_each_site_by_the_method_names():
    paired = _repeats().paired[0]
    raw = paired.to_dict()
    assert list(raw) == ["first", "second", "metric", "differences", "mean", "std", "n", "per_site"]
    assert raw["per_site"] == {"alpha": {"federated": 0, "pooled": 1, "ties": 1, "readable": True}}
    assert PairedComparison.from_dict(raw) == paired


def test_a_spread_not_computed_is_null_in_the_json_and_nan_back():
    one = MethodSpread(site_mean={"auroc": Spread(0.7, NAN, 1)}, site_mean_all={}, per_site={}, readable={})
    summary = replace(_repeats(), aggregate={"federated": one})
    raw = json.loads(summary.to_json())  # strict JSON
    assert raw["aggregate"]["federated"]["site_mean"]["auroc"] == {"mean": 0.7, "std": None, "n": 1}
    back = RepeatsSummary.from_dict(raw).aggregate["federated"].site_mean["auroc"]
    assert (back.mean, back.n) == (0.7, 1) and math.isnan(back.std)


def test_a_repeats_summary_of_another_version_is_refused_naming_the_file(tmp_path: Path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({**_repeats().to_dict(), "version": SUMMARY_VERSION + 1}))
    with pytest.raises(ValueError, match=rf"{path}: summary version {SUMMARY_VERSION + 1}, expected {SUMMARY_VERSION}"):
        RepeatsSummary.load(path)
