import numpy as np
import pandas as pd
import pytest

from client.features import StatisticsError, encode_tabular, merge_statistics, site_statistics
from client.manifest import read_manifest_folder
from tests.conftest import write_image_sites


def test_pooled_mean_and_std_equal_a_pooled_computation(image_sites):
    manifests = read_manifest_folder(image_sites)
    stats = [site_statistics(m) for m in manifests]
    spec = merge_statistics(stats, schema=manifests[0].schema, task=manifests[0].task)
    ages = pd.concat([pd.to_numeric(m.table["age"]) for m in manifests]).dropna()
    mean, std = spec.numeric["age"]
    assert mean == pytest.approx(ages.mean()) and std == pytest.approx(ages.std(ddof=0))
    assert spec.categorical["sex"] == ["female", "male"]
    assert spec.classes == ["benign", "malignant"]
    assert spec.modalities == ["image", "tabular"] and spec.shapes["image"] == [3, 8, 8]


def test_statistics_hold_only_counts_and_sums(image_sites):
    stats = site_statistics(read_manifest_folder(image_sites)[0])
    flat = str(stats)
    assert "alpha-0" not in flat and "images/" not in flat  # no sample ids, no paths
    assert stats["present"]["image"] == 40 - 8  # every 5th image cell is empty


def test_missing_values_get_an_indicator_never_a_silent_zero(image_sites):
    manifest = read_manifest_folder(image_sites)[0]
    spec = merge_statistics([site_statistics(manifest)], schema=manifest.schema, task="binary")
    rows = pd.DataFrame({"age": [None, "60"], "sex": [None, "male"]})
    encoded = encode_tabular(rows, spec)
    assert encoded.shape == (2, spec.tabular_width) == (2, 2 + 3)
    np.testing.assert_array_equal(encoded[0], [0.0, 1.0, 0.0, 0.0, 1.0])  # age imputed + flagged; sex flagged
    assert encoded[1, 1] == 0.0 and encoded[1, 3] == 1.0


def test_binary_task_with_three_classes_is_refused(tmp_path):
    write_image_sites(tmp_path, sites={"a": 12})
    manifest = read_manifest_folder(tmp_path)[0]
    stats = site_statistics(manifest)
    stats["labels"]["unsure"] = 2
    with pytest.raises(StatisticsError, match="exactly 2 classes"):
        merge_statistics([stats], schema=manifest.schema, task="binary")


def test_the_json_copy_keeps_the_encoding_order():
    from client.features import FeatureSpec

    spec = FeatureSpec(task="binary", classes=["a", "b"], numeric={"z": (0.0, 1.0), "a": (1.0, 2.0)},
                       categorical={"y": ["1", "2", "3"], "b": ["x"]}, omics={}, files={}, shapes={},
                       modalities=["tabular"])  # fmt: skip
    back = FeatureSpec.from_json(spec.to_json())
    assert list(back.numeric) == ["z", "a"] and list(back.categorical) == ["y", "b"]
