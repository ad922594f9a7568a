"""A run folder stays small and portable: site manifests that still load after the folder is
copied elsewhere, no cache inside it, and a banner that says what the run used."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from client.data import load_site_dataset
from client.features import merge_statistics, site_statistics
from client.manifest import read_manifest_folder
from simulation.datasets import DATA_DIR
from tests.simulation.test_prepare import _config
from simulation.prepare import prepare_sites


@pytest.mark.parametrize(
    ("overrides", "inside_run"),
    [(["max_samples=300"], False),  # HAM10000: images under data/, written as absolute paths
     (["data=synthetic", "data.params.n_samples=150", "num_sites=2"], True)],  # generated inside the run folder
)  # fmt: skip
def test_a_copied_run_folder_still_loads_its_sites(tmp_path, overrides, inside_run):
    run, copy = tmp_path / "run", tmp_path / "elsewhere" / "run"
    _, written = prepare_sites(_config(*overrides), run)
    shutil.copytree(run, copy)
    shutil.rmtree(run)  # nothing may point back into the original folder

    manifests = read_manifest_folder(copy / "sites", check_files=True)
    assert [m.site for m in manifests] == [m.site for m in written]
    image_cells = pd.concat([m.table["image"].dropna() for m in manifests]).astype(str)
    if inside_run:
        assert image_cells.str.startswith("../").all()
    else:
        assert image_cells.map(lambda p: p.startswith(str(DATA_DIR))).all()
    stats = [site_statistics(m) for m in manifests]
    features = merge_statistics(stats, schema=manifests[0].schema, task=manifests[0].task)
    for manifest in manifests:
        dataset = load_site_dataset(manifest, features, split="test", cache_dir=tmp_path / "cache")
        assert len(dataset) > 0 and bool(dataset.present[:, features.modalities.index("image")].any())
    assert not list(copy.rglob(".fedfusion-cache"))


def test_the_description_says_what_the_run_used(tmp_path):
    table, manifests = prepare_sites(_config("max_samples=1500", "partition=iid", "num_sites=3"), tmp_path / "run")
    rows = sum(len(m.table) for m in manifests)
    assert len(table) == rows < 1500
    groups = len(np.unique(table.group_codes()))
    assert f"This run: {rows:,} of its 10,015 samples ({groups:,} groups; max_samples=1500" in table.description
    assert table.description.endswith("partition iid into 3 sites")

    full, _ = prepare_sites(_config("data=tcga_brca"), tmp_path / "tcga")
    assert "This run: all " in full.description and "partition natural into 6 sites" in full.description
