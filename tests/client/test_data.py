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


def test_the_default_cache_is_one_shared_folder_named_by_the_environment(site, tmp_path, monkeypatch):
    manifest, _ = site
    monkeypatch.setenv(data_module.CACHE_ENV, str(tmp_path / "shared"))
    assert data_module.default_cache_dir(manifest) == tmp_path / "shared"
    monkeypatch.delenv(data_module.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_module.default_cache_dir() == tmp_path / "xdg" / "fedfusion"


def _copy_manifest(manifest_path, folder):
    """The same rows in another folder, with absolute image paths (what the site writer writes)."""
    import pandas as pd

    frame = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    frame["image"] = [str(manifest_path.parent / p) if p else "" for p in frame["image"]]
    folder.mkdir(parents=True)
    frame.to_csv(folder / manifest_path.name, index=False)
    return read_manifest_folder(folder)[0]


def test_two_manifests_of_the_same_files_share_one_entry_and_a_changed_file_gets_its_own(site, tmp_path, monkeypatch):
    manifest, spec = site
    cache = tmp_path / "cache"
    first = load_site_dataset(manifest, spec, split="train", cache_dir=cache)
    copy = _copy_manifest(manifest.path, tmp_path / "another_run")  # another run's sites/ folder

    def no_reading(*args, **kwargs):
        raise AssertionError("the cache was not used")

    with monkeypatch.context() as patch:
        patch.setattr(data_module, "read_file_array", no_reading)
        second = load_site_dataset(copy, spec, split="train", cache_dir=cache)
    assert torch.equal(first.inputs["image"], second.inputs["image"])
    assert len(list(cache.glob("*.npz"))) == 1

    image = manifest.file_path("image", int(np.flatnonzero(manifest.table["image"].notna())[0]))
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8), mode="RGB").save(image)  # new content, new mtime
    third = load_site_dataset(copy, spec, split="train", cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2
    assert not torch.equal(first.inputs["image"], third.inputs["image"])
