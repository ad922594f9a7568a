"""End to end: the real `fedfusion simulate` command, a real Flower SuperLink and simulation
engine, real files. Every process the run starts must be gone when it ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from simulation.processes import processes_with_environment
from tests.conftest import write_image_sites

pytestmark = pytest.mark.slow
FEDFUSION = [sys.executable, "-m", "simulation.cli"]
REPO = Path(__file__).resolve().parents[2]
OUTPUT_FILES = [
    "config.yaml", "metrics.csv", "summary.json", "report.md", "federated/global.pt", "sites/schema.yaml",
    "plots/learning_curves.png", "plots/learning_curves_per_site.png", "plots/partition.png",
    "plots/modalities.png", "plots/site_results.png",
]  # fmt: skip


def kill_leftovers(marker: str, *, grace_s: float = 0.0) -> list[int]:
    """Kill (by pid) every process whose environment holds ``marker``, after giving them up to
    ``grace_s`` to exit by themselves (one still finishing its shutdown is not left running);
    returns their pids.

    Called before asserting that none is left, so one failure does not leak into other tests.
    """
    deadline = time.monotonic() + grace_s
    while processes_with_environment(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = processes_with_environment(marker)
    for pid in leftovers:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    return leftovers


def _simulate(run_dir: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    marker = f"FEDFUSION_TEST_RUN={uuid.uuid4().hex}"
    env = dict(os.environ, FEDFUSION_TEST_RUN=marker.split("=", 1)[1])
    result = subprocess.run(
        [*FEDFUSION, "simulate", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    leftovers = kill_leftovers(marker)
    assert not leftovers, f"processes left running after the run: {leftovers}"
    return result


def _check_outputs(run_dir: Path, result: subprocess.CompletedProcess) -> dict:
    summary = _check_outputs_partial(run_dir, result)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics.columns[:6]) == ["method", "round", "site", "split", "metric", "value"]
    assert {"federated", "pooled", "local"} <= set(metrics["method"])
    report = (run_dir / "report.md").read_text()
    assert "mean over sites" in report and "pooled test" in report
    return summary


def test_sigterm_mid_run_stops_every_process_and_marks_the_folder_failed(tmp_path):
    marker = uuid.uuid4().hex
    run_dir = tmp_path / "run"
    with (tmp_path / "out.txt").open("w") as out:
        process = subprocess.Popen(
            [*FEDFUSION, "simulate", "max_samples=1000", "rounds=40", "baselines=[]", f"hydra.run.dir={run_dir}"],
            cwd=REPO, env=dict(os.environ, FEDFUSION_TEST_RUN=marker), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            # round 1 done: the SuperLink, flwr run, the engine, Ray and its actor all run
            while not (run_dir / "federated" / "progress.json").exists():
                assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "out.txt").read_text()
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    leftovers = kill_leftovers(f"FEDFUSION_TEST_RUN={marker}")
    assert not leftovers, f"processes left running after SIGTERM: {leftovers}"
    assert returncode == 128 + signal.SIGTERM
    assert "SystemExit" in (run_dir / "FAILED.txt").read_text()


def test_bundled_ham10000_beats_chance_and_writes_every_output(tmp_path):
    run_dir = tmp_path / "run"
    result = _simulate(run_dir, "max_samples=3000", "rounds=3", "train.epochs=1", "bootstrap=50")
    summary = _check_outputs(run_dir, result)
    assert summary["task"] == "binary" and len(summary["sites"]) == 4
    for method in ("federated", "pooled", "local"):
        assert summary["methods"][method]["site_mean"]["auroc"] > 0.6, (method, summary["methods"][method]["site_mean"])
    assert "mean over sites" in result.stdout


def test_hand_written_manifests(tmp_path):
    sites = tmp_path / "hospital_sites"
    # east is too small to read (about 4 test positives): flagged, shown, left out of the mean
    write_image_sites(sites, sites={"north": 160, "south": 150, "east": 40}, missing_image_every=6)
    run_dir = tmp_path / "run"
    result = _simulate(run_dir, "data=manifests", f"data.dir={sites}", "rounds=3", "train.batch_size=16", "bootstrap=50")
    summary = _check_outputs(run_dir, result)
    assert summary["sites"] == ["east", "north", "south"]
    federated = summary["methods"]["federated"]
    assert federated["per_site"]["east"]["readable"] is False and federated["per_site"]["north"]["readable"] is True
    assert federated["site_mean_n"]["auroc"] == 2
    assert federated["site_mean"]["auroc"] > 0.75  # brightness carries the label
    assert "east †" in result.stdout and "personalized" in summary["methods"]
    assert "inferred" in result.stdout


def test_bad_manifest_stops_before_training_without_a_traceback(tmp_path):
    sites = tmp_path / "sites"
    write_image_sites(sites, sites={"north": 10, "south": 10})
    frame = pd.read_csv(sites / "south.csv", dtype=str, keep_default_na=False)
    frame.loc[3, "age"] = "forty"
    frame.to_csv(sites / "south.csv", index=False)
    (sites / frame.loc[5, "image"]).unlink()
    result = _simulate(tmp_path / "run", "data=manifests", f"data.dir={sites}")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "south.csv, row 5, column 'age'" in output and "forty" in output
    assert "south.csv, row 7, column 'image'" in output
    assert not (tmp_path / "run" / "federated").exists()


def test_survival_on_tabular_only_tcga_brca(tmp_path):
    run_dir = tmp_path / "run"
    result = _simulate(run_dir, "data=tcga_brca", "rounds=2", "baselines=[pooled]", "bootstrap=50")
    summary = _check_outputs_partial(run_dir, result)
    assert summary["task"] == "survival" and summary["headline"] == "c_index"
    assert len(summary["sites"]) == 6
    reported = [e for e in json.loads((run_dir / "federated" / "site_evaluation.json").read_text())["sites"]
                if e["model"] == "global"]
    assert sorted(e["site"] for e in reported) == sorted(summary["sites"])  # every region scored itself
    assert all(e["threshold"] is None and e["metrics"]["n"] > 0 for e in reported)
    assert set(summary["methods"]["federated"]["per_site"]) == set(summary["sites"])


def _check_outputs_partial(run_dir: Path, result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in OUTPUT_FILES:
        assert (run_dir / name).is_file(), f"{name} was not written"
    return json.loads((run_dir / "summary.json").read_text())


def test_an_early_fusion_head_through_flower_explains_itself(tmp_path):
    sites = tmp_path / "hospital_sites"
    write_image_sites(sites, sites={"north": 60, "south": 50})
    run_dir = tmp_path / "run"
    result = _simulate(run_dir, "data=manifests", f"data.dir={sites}", "fusion=film", "rounds=2",
                       "train.batch_size=16", "baselines=[]", "bootstrap=20")  # fmt: skip
    summary = _check_outputs_partial(run_dir, result)
    assert set(summary["methods"]) == {"federated", "personalized"}  # personalization=finetune by default
    assert any(key.endswith("film_gamma") for key in summary["explanations"])
    assert (run_dir / "plots" / "explanations.png").is_file()
    assert "explanations.png" in (run_dir / "report.md").read_text()


def test_eicu_time_series_through_flower(tmp_path):
    run_dir = tmp_path / "run"
    result = _simulate(run_dir, "data=eicu", f"+data.params.series_root={tmp_path / 'series'}", "max_samples=800",
                       "rounds=2", "baselines=[pooled]", "bootstrap=20")  # fmt: skip
    summary = _check_outputs_partial(run_dir, result)
    assert summary["modalities"] == ["tabular", "series"]
    assert summary["methods"]["pooled"]["pooled_test"]["auroc"] > 0.5


def test_secure_aggregation_through_flower(tmp_path):
    sites = tmp_path / "hospital_sites"
    write_image_sites(sites, sites={"north": 160, "south": 150, "east": 150}, missing_image_every=6)
    run_dir = tmp_path / "run"
    result = _simulate(run_dir, "data=manifests", f"data.dir={sites}", "rounds=3", "train.batch_size=16", "bootstrap=50",
                       "baselines=[]", "personalization=none", "secure_aggregation=secaggplus")  # fmt: skip
    summary = _check_outputs_partial(run_dir, result)
    federated = summary["methods"]["federated"]
    assert federated["site_mean_n"]["auroc"] >= 2 and federated["site_mean"]["auroc"] > 0.75  # brightness: the label
    log = (run_dir / "logs" / "flwr_run.log").read_text()
    assert log.count("Secure aggregation completed") == 3, "each round's training went through SecAgg+"
    assert summary["secure_aggregation"] == "secaggplus"
    assert "secure aggregation: secaggplus" in (run_dir / "report.md").read_text()
