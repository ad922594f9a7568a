"""End to end: the real `fedfusion sweep` command, a 2 x 2 grid (epsilon inf and 5 x two fusion
heads), each job a real Flower simulation; one table, two plots, and no process left behind."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import uuid

import pytest
import yaml

from tests.simulation.test_simulate_e2e import FEDFUSION, REPO, kill_leftovers

pytestmark = pytest.mark.slow


def test_a_two_by_two_sweep_writes_one_table_and_both_plots(tmp_path):
    sweep_dir = tmp_path / "sweep"
    marker = uuid.uuid4().hex
    env = dict(os.environ, FEDFUSION_TEST_RUN=marker)
    result = subprocess.run(
        [*FEDFUSION, "sweep", "data=synthetic", "data.params.n_samples=300", "num_sites=2", "rounds=1",
         "baselines=[]", "bootstrap=20", "personalization=none", "privacy.target_epsilon=inf,5",
         "fusion=concat,gmu", f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    leftovers = kill_leftovers(f"FEDFUSION_TEST_RUN={marker}")
    assert not leftovers, f"processes left running after the sweep: {leftovers}"
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "privacy=dp added" in result.stdout and "attack=loss added" in result.stdout
    for name in ("sweep.csv", "sweep.md", "plots/utility_vs_epsilon.png", "plots/attack_vs_epsilon.png"):
        assert (sweep_dir / name).is_file(), f"{name} was not written"
        assert (sweep_dir / name).stat().st_size > 0
    rows = list(csv.DictReader((sweep_dir / "sweep.csv").open()))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    assert {(r["method"], r["epsilon"]) for r in rows} == {(f"fusion={f}", e) for f in ("concat", "gmu")
                                                           for e in ("inf", "5.0")}  # fmt: skip
    for r in rows:
        config = yaml.safe_load((sweep_dir / r["run_dir"].rsplit("/", 1)[-1] / "config.yaml").read_text())
        if r["epsilon"] == "inf":  # epsilon inf ran without DP, and the table says so
            assert config["privacy"]["name"] == "none" and r["privacy"].startswith("none (no DP")
        else:
            assert config["privacy"]["name"] == "dp" and config["privacy"]["target_epsilon"] == 5
            assert 0 < float(r["epsilon_spent"]) <= 5 + 1e-6
        assert r["attack"] == "loss" and 0 <= float(r["attack_auc"]) <= 1
        assert math.isfinite(float(r["federated"]))
        assert r["tpr_at_0_1pct_fpr"] == ""  # far fewer than 1000 non-members: None, with the reason in the table
    table = (sweep_dir / "sweep.md").read_text()
    assert "not resolvable" in table and "| fusion=gmu | inf | none (no DP" in table
