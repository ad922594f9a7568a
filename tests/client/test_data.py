import numpy as np
import pytest
import torch

from client import data as data_module
from client.data import load_site_dataset
from client.features import merge_statistics, site_statistics
from client.manifest import read_manifest_folder


@pytest.fixture
def site(image_sites):
    manifest = read_manifest_folder(image_sites)[0]
    spec = merge_statistics([site_statistics(manifest)], schema=manifest.schema, task="binary")
    return manifest, spec


def test_a_sample_is_a_dict_of_modalities_with_a_presence_mask(site, tmp_path):
    manifest, spec = site
    dataset = load_site_dataset(manifest, spec, split="train", cache_dir=tmp_path / "cache")
    item = dataset[0]
    assert set(item) == {"image", "tabular", "present", "label"}
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["present"].dtype == torch.bool and item["present"].shape == (2,)
    assert len(dataset) == 40


def test_an_empty_image_cell_is_absent_not_zero_and_unknown(site, tmp_path):
    manifest, spec = site
    dataset = load_site_dataset(manifest, spec, split="train", cache_dir=tmp_path / "cache")
    missing = manifest.table["image"].isna().to_numpy()
    np.testing.assert_array_equal(dataset.present[:, 0].numpy(), ~missing)
    assert dataset.presence_counts() == {"image": int((~missing).sum()), "tabular": 40}


def test_decoded_files_come_from_the_cache_the_second_time(site, tmp_path, monkeypatch):
    manifest, spec = site
    first = load_site_dataset(manifest, spec, split="train", cache_dir=tmp_path / "cache")

    def no_reading(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(data_module, "read_file_array", no_reading)
    second = load_site_dataset(manifest, spec, split="train", cache_dir=tmp_path / "cache")
    assert torch.equal(first.inputs["image"], second.inputs["image"])


def test_unknown_split_is_refused(site):
    manifest, spec = site
    with pytest.raises(ValueError, match="split must be one of"):
        load_site_dataset(manifest, spec, split="holdout")
