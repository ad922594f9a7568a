"""The eICU demo loader: labelled stays, no outcome columns among inputs, series written once,
regions (and hospitals) as sites."""

import os

import numpy as np
import pandas as pd
import pytest

from client.file_reader import read_file_array
from simulation.datasets import DATA_DIR, DATASETS, load_dataset
from simulation.datasets.eicu import EXCLUDED, VARIABLES
from simulation.partitioners.natural import partition as natural

LEAKS = {"hosp_mort", "unit_mort", "icu_los_hours", "hospitaldischargeyear", "n_ts_obs_48h", "has_nibp_48h",
         "apache_iva_pred_hosp_mort"}  # fmt: skip


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("eicu_series")
    return load_dataset("eicu", series_root=root, max_stays=300), root


def test_registered():
    assert "eicu" in DATASETS.names()


def test_every_labelled_stay_is_a_row_and_the_unlabelled_are_dropped(tmp_path):
    table = load_dataset("eicu", series_root=tmp_path)
    assert len(table) == 2492  # README: 2,520 stays, 28 without hosp_mort
    assert table.table["label"].value_counts().to_dict() == {"alive": 2280, "died": 212}
    assert table.schema.classes == ["alive", "died"] and table.schema.task == "binary"
    assert table.table["group_id"].nunique() < len(table)  # patients with several stays


def test_no_outcome_or_leaking_column_is_an_input(small):
    table, _ = small
    inputs = set(table.schema.columns_with("numeric", "categorical", "series", "omics", "image"))
    assert not inputs & LEAKS and not inputs & set(EXCLUDED)
    assert {"age", "gender", "aps_heartrate", "apache_iva_score", "vitals"} <= inputs
    assert table.schema.columns["group_id"] == "group" and table.schema.columns["hospitalid"] == "ignore"


def test_series_files_are_written_once_and_reused(small, tmp_path):
    table, root = small
    paths = table.table["vitals"].dropna()
    assert len(paths) > 250 and all(os.path.isabs(p) and p.startswith(str(root)) for p in paths)
    stamps = {p: os.stat(p).st_mtime_ns for p in paths}
    again = load_dataset("eicu", series_root=root, max_stays=300)
    assert again.table["vitals"].equals(table.table["vitals"])
    assert {p: os.stat(p).st_mtime_ns for p in paths} == stamps
    assert not [f for f in os.listdir(root) if f.endswith(".tmp")]


def test_a_series_file_reads_as_values_masks_and_times(small):
    table, _ = small
    path = table.table["vitals"].dropna().iloc[0]
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["hours", *VARIABLES] and frame["hours"].is_monotonic_increasing
    array = read_file_array(path, modality="series")
    c = len(VARIABLES)
    assert array.shape[0] == 2 * c + 1
    n = min(len(frame), array.shape[1])
    np.testing.assert_array_equal(array[c : 2 * c, :n], frame[VARIABLES].notna().to_numpy()[:n].T)
    assert ((array[2 * c, :n] >= 0) & (array[2 * c, :n] < 1)).all()


def test_regions_are_the_sites_and_hospitals_the_alternative(small):
    table, _ = small
    assert table.site_column == "hosp_region"
    assert set(table.table["hosp_region"]) <= {"Midwest", "Northeast", "South", "West", "unknown"}
    by_region = natural(table)
    assert set(by_region.sites) <= {"Midwest", "Northeast", "South", "West", "unknown"}
    by_hospital = natural(table, column="hospitalid", keep_groups=False)
    assert len(by_hospital.sites) == table.table["hospitalid"].nunique()


def test_min_icu_hours_keeps_only_long_stays(tmp_path):
    stays = pd.read_csv(DATA_DIR / "eicu_demo_ts" / "stays.csv").set_index("patientunitstayid")
    long = load_dataset("eicu", series_root=tmp_path, max_stays=100, min_icu_hours=48)
    hours = stays.loc[long.table["sample_id"].astype(int), "icu_los_hours"]
    assert len(long) == 100 and (hours >= 48).all()


def test_only_the_binary_task(tmp_path):
    with pytest.raises(ValueError, match="binary"):
        load_dataset("eicu", series_root=tmp_path, task="survival")
