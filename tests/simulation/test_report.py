"""Tests of simulation/report.py and simulation/plots.py on small synthetic runs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from rich.console import Console

from simulation.plots import metric_label
from simulation.report import print_results, results_table, write_all, write_report
from simulation.run_summary import RunSummary

SITES = ["alpha", "beta", "gamma"]
METHODS = ["federated", "pooled", "local"]
PLOTS = {"learning_curves.png", "learning_curves_per_site.png", "partition.png", "modalities.png", "site_results.png"}
NAN = float("nan")


def _binary_summary() -> dict:
    metrics = ["auroc", "auprc", "balanced_accuracy", "ece"]
    methods = {}
    for k, method in enumerate(METHODS):
        per_site = {}
        for i, site in enumerate(SITES):
            row: dict = {}
            for j, m in enumerate(metrics):
                value = 0.6 + 0.05 * i + 0.02 * k + 0.01 * j
                row[m] = value
                row[f"{m}_ci"] = [value - 0.05, value + 0.04]
            row.update(n=100, n_pos=40 if site != "gamma" else 3, threshold=0.35, readable=site != "gamma",
                       note="" if site != "gamma" else "3 positives and 97 negatives in test")
            per_site[site] = row
        # NaN metric and a missing CI, as the evaluation writes them for a one-class site
        per_site["beta"]["ece"] = NAN
        del per_site["beta"]["auroc_ci"]
        site_mean = {m: sum(r[m] for r in per_site.values() if math.isfinite(r[m])) / 3 for m in metrics}
        site_mean["ece"] = (per_site["alpha"]["ece"] + per_site["gamma"]["ece"]) / 2
        methods[method] = {
            "per_site": per_site, "site_mean": site_mean,
            "site_mean_n": {m: 3 for m in metrics} | {"ece": 2},
            "pooled_test": {m: 0.9 for m in metrics} | {"auprc": NAN}, "seconds": 12.5,
        }
    partition = {
        s: {"train": 300, "val": 60, "test": 100, "labels": {"benign": 400 - 50 * i, "malignant": 60 + 50 * i},
            "modalities": {"image": 460, "tabular": 300 + 40 * i}}
        for i, s in enumerate(SITES)
    }
    return {
        "name": "toy_binary", "task": "binary", "headline": "auroc", "higher_is_better": True,
        "classes": ["benign", "malignant"], "rounds": 3, "local_epochs": 1.0, "privacy": "none",
        "dataset": "toy", "description": "A synthetic run.", "sites": SITES, "metrics": metrics,
        "methods": methods, "partition": partition,
        "files": {"config": "config.yaml", "metrics": "metrics.csv", "checkpoint": "federated/global.pt",
                  "sites": "sites/"},
        "warnings": ["No differential privacy (privacy=none): updates leave each site unprotected."],
    }


def _survival_summary() -> dict:
    per_site = {
        "north": {"c_index": 0.68, "c_index_ci": [0.6, 0.75], "mae": 10.0, "n": 80, "n_events": 30, "readable": True},
        "south": {"c_index": NAN, "mae": 12.0, "n": 40, "n_events": 4, "readable": False, "note": "4 events in test"},
    }
    return {
        "name": "toy_survival", "task": "survival", "headline": "c_index", "higher_is_better": True,
        "rounds": 3, "local_epochs": 0.5, "privacy": "dp", "dataset": "toy", "sites": ["north", "south"],
        "metrics": ["c_index", "mae"],
        "methods": {"federated": {
            "per_site": per_site, "site_mean": {"c_index": 0.68, "mae": 11.0},
            "site_mean_n": {"c_index": 1, "mae": 2}, "pooled_test": {"c_index": 0.7, "mae": 11.5},
        }},
        "partition": {"north": {"train": 200, "val": 40, "test": 80, "labels": {"events": 120, "censored": 200},
                                "modalities": {"tabular": 320, "omics": 100}},
                      "south": {"train": 100, "val": 20, "test": 40, "labels": {"events": 20, "censored": 140},
                                "modalities": {"tabular": 160}}},
        "files": {"config": "config.yaml", "metrics": "metrics.csv", "checkpoint": "federated/global.pt"},
        "warnings": [],
    }


def _metrics_frame(summary: dict, *, with_mean: bool, rounds: list[int]) -> pd.DataFrame:
    rows = []
    for k, method in enumerate(summary["methods"]):
        for r in rounds:
            for i, site in enumerate(summary["sites"]):
                value = NAN if (site == summary["sites"][-1] and r == rounds[0]) else 0.5 + 0.05 * r + 0.01 * i + k / 50
                rows.append((method, r, site, "val", summary["headline"], value))
                rows.append((method, r, site, "val", "loss", 1.0 / r))
            if with_mean:
                rows.append((method, r, "__mean__", "val", summary["headline"], 0.55 + 0.05 * r))
        rows.append((method, rounds[-1], "__pooled__", "test", summary["headline"], 0.9))
    return pd.DataFrame(rows, columns=["method", "round", "site", "split", "metric", "value"])


def _run_dir(tmp_path: Path, summary: dict, frame: pd.DataFrame) -> Path:
    run_dir = tmp_path / summary["name"]
    (run_dir / "sites").mkdir(parents=True)
    (run_dir / "federated").mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\n")
    (run_dir / "federated" / "global.pt").write_bytes(b"\0")
    frame.to_csv(run_dir / "metrics.csv", index=False)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def _check_pngs(paths: list[Path]) -> None:
    pngs = [p for p in paths if p.suffix == ".png"]
    assert {p.name for p in pngs} == PLOTS
    for p in pngs:
        assert p.parent.name == "plots" and p.stat().st_size > 5_000, p
        with Image.open(p) as image:
            image.verify()
        with Image.open(p) as image:
            assert image.format == "PNG" and min(image.size) > 200, (p, image.size)


def _check_links(report: Path) -> list[str]:
    text = report.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {Path(i).name for i in images} == PLOTS
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert not Path(link).is_absolute()
        assert (report.parent / link).exists(), link
    return images


def test_write_all_binary(tmp_path: Path) -> None:
    summary = _binary_summary()
    run_dir = _run_dir(tmp_path, summary, _metrics_frame(summary, with_mean=True, rounds=[1, 2, 3]))
    paths = write_all(run_dir, RunSummary.from_dict(summary))
    _check_pngs(paths)
    report = paths[-1]
    assert report == run_dir / "report.md" and all(p.exists() for p in paths)
    text = report.read_text()
    _check_links(report)
    assert "**mean over sites**" in text and "_pooled test (inflated)_" in text
    assert text.count("**mean over sites**") == 3 and text.count("_pooled test (inflated)_") == 3
    assert "0.600 [0.550, 0.640]" in text  # headline with CI
    assert "n/a" in text  # NaN ECE at beta and NaN pooled AUPRC
    assert "(2 of 3 sites)" in text  # ECE mean left beta out
    assert text.count("**gamma**: 3 positives and 97 negatives in test; flagged") == 1  # one line per site
    assert "gamma †" in text and "alpha †" not in text and "**alpha**" not in text
    assert "| 0.35 |" in text  # the site's own threshold beside its figures
    assert "inflated" in text and "base rates" in text
    for link in ("config.yaml", "metrics.csv", "summary.json", "federated/global.pt", "(sites)"):
        assert link in text, link
    assert summary["warnings"][0] in text
    assert not list(run_dir.glob(".*.tmp")) and not list((run_dir / "plots").glob(".*"))


def test_write_all_survival_one_method(tmp_path: Path) -> None:
    summary = _survival_summary()
    summary["methods"]["federated"]["pooled_test"]["c_index"] = 0.6  # below the mean over sites (0.68)
    # no __mean__ rows and a missing round 2: curves fall back to the mean over sites
    run_dir = _run_dir(tmp_path, summary, _metrics_frame(summary, with_mean=False, rounds=[1, 3]))
    paths = write_all(run_dir, RunSummary.from_dict(summary))
    _check_pngs(paths)
    text = paths[-1].read_text()
    _check_links(paths[-1])
    assert "0.680 [0.600, 0.750]" in text
    assert "**south**: 4 events in test; flagged: shown with its interval, left out of the mean over sites; " \
           "C-index undefined for federated." in text
    assert "not higher than the mean over sites" in text and "(inflated)" not in text
    assert "(1 of 2 sites)" in text
    assert "(not written)" not in text.split("## Files")[1].split("checkpoint")[0]


def test_lower_is_better_and_empty_metrics(tmp_path: Path) -> None:
    summary = _survival_summary()
    summary.update(task="regression", headline="rmse", higher_is_better=False, metrics=["rmse", "mae"], name="toy_reg")
    for part in summary["partition"].values():
        del part["labels"]
    for row in summary["methods"]["federated"]["per_site"].values():
        row.pop("n_events")
        row["rmse"] = 3.0
    run_dir = tmp_path / "reg"
    run_dir.mkdir()  # no metrics.csv, no config: the report still comes out, links marked
    paths = write_all(run_dir, RunSummary.from_dict(summary))
    _check_pngs(paths)
    text = paths[-1].read_text()
    assert "RMSE (lower is better)" in text and "(not written)" in text
    assert metric_label("rmse", False) == "RMSE (lower is better)"


def _render(summary: dict) -> str:
    console = Console(record=True, width=220)
    console.print(results_table(RunSummary.from_dict(summary)))
    return console.export_text()


def test_results_table_rows() -> None:
    summary = _binary_summary()
    rendered = _render(summary)
    lines = [line for line in rendered.splitlines() if "│" in line]
    labels = [line.split("│")[2].strip() for line in lines]
    expected = (["alpha", "beta", "gamma †"] + ["mean over sites", "pooled test (inflated)"]) * 3
    assert labels == expected
    text = rendered
    assert "0.600 [0.550, 0.640]" in text and "AUROC (higher is better) [95% CI]" in text
    assert "100 (3 pos)" in text and "threshold" in text and "0.35" in text
    assert "ECE" not in text, "the terminal table keeps to a few columns; report.md has them all"
    methods = [line.split("│")[1].strip() for line in lines]
    assert [m for m in methods if m] == METHODS


@pytest.mark.parametrize("keep", [["federated"], ["local"]])
def test_results_table_single_method_single_site(keep: list[str]) -> None:
    summary = _binary_summary()
    summary["methods"] = {m: summary["methods"][m] for m in keep}
    summary["sites"] = ["alpha"]
    for result in summary["methods"].values():
        result["per_site"] = {"alpha": result["per_site"]["alpha"]}
    text = _render(summary)
    assert "alpha" in text and "beta" not in text and "pooled test (inflated)" in text


def test_print_results_explains_headline() -> None:
    console = Console(record=True, width=220)
    print_results(RunSummary.from_dict(_binary_summary()), console)
    text = " ".join(console.export_text().split())  # the explanation wraps at the console width
    assert "mean over sites" in text and "inflated" in text
    assert "13.0% to 34.8%" in text  # malignant share spread over the three sites
    assert "No differential privacy" in text and "gamma" in text


def test_write_report_is_atomic_overwrite(tmp_path: Path) -> None:
    summary = _binary_summary()
    (tmp_path / "report.md").write_text("old")
    path = write_report(tmp_path, RunSummary.from_dict(summary), [])
    assert path.read_text().startswith("# toy_binary") and not list(tmp_path.glob(".report.md.*"))


def test_the_pooled_rows_threshold_and_a_personalized_model_without_pooled_test_are_stated() -> None:
    summary = _binary_summary()
    summary["methods"]["personalized"] = {**summary["methods"]["federated"], "pooled_test": {}}
    lines = [line for line in _render(summary).splitlines() if "│" in line]
    pooled = [[c.strip() for c in line.split("│")] for line in lines if "pooled test" in line]
    assert len(pooled) == 4
    filled = [row for row in pooled if "0.900" in row]
    assert len(filled) == 3 and all("0.5" in row for row in filled)
    assert all("0.5" not in row for row in pooled if row not in filled), "no threshold where nothing was scored"
    console = Console(record=True, width=400)
    print_results(RunSummary.from_dict(summary), console)
    text = " ".join(console.export_text().split())
    assert "The pooled test's threshold metrics use 0.5" in text
    assert "The personalized model has no pooled test: each site keeps its own model" in text
    del summary["methods"]["personalized"]
    console = Console(record=True, width=400)
    print_results(RunSummary.from_dict(summary), console)
    assert "personalized model has no pooled test" not in " ".join(console.export_text().split())
