"""End to end through `fedfusion simulate`: three hospitals whose ids overlap and whose label
column goes by another name, declared in a schema.yaml that names only that column."""

from __future__ import annotations

import json

import pytest

from tests.simulation.test_hospital_sites import SITES, write_sites
from tests.simulation.test_simulate_e2e import _simulate

pytestmark = pytest.mark.slow


def test_overlapping_ids_and_a_renamed_label_through_flower(tmp_path):
    sites = write_sites(tmp_path / "hospitals", rename={"label": "diagnosis"})
    run_dir = tmp_path / "run"
    result = _simulate(run_dir, "data=manifests", f"data.dir={sites}", "rounds=2", "train.batch_size=16",
                       "baselines=[]", "bootstrap=20")  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["sites"] == sorted(SITES) and summary["task"] == "binary"
    assert {site: sum(entry["labels"].values()) for site, entry in summary["partition"].items()} == SITES
    assert set(summary["methods"]["federated"]["per_site"]) == set(SITES)
    assert "  label        diagnosis" in (run_dir / "sites" / "schema.txt").read_text().splitlines()
    assert "diagnosis" in result.stdout and "(inferred from the labels)" in result.stdout
