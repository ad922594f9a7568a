"""The typed run summary: what summary.json holds, read back the same, and refused when it is
of another version."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from simulation.run_summary import SUMMARY_VERSION, MethodResult, RunSummary, SitePartition, SiteResult

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
