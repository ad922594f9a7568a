"""Writing virtual sites: manifests round-trip, paths resolve, schema.yaml loads."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from client.schema import Schema
from simulation.datasets import load_dataset
from simulation.partitioners import make_partition
from simulation.site_writer import assign_splits, write_sites


@pytest.fixture()
def synthetic(tmp_path):
    return load_dataset("synthetic", root=tmp_path / "files", n_samples=60, modalities=["image", "tabular", "series"],
                        n_natural_sites=3, seed=0)


def test_round_trip(synthetic, tmp_path) -> None:
    st = synthetic
    part = make_partition("missing_modality", st, num_sites=3, seed=0, modality="image", site_fraction=0.34)
    split = assign_splits(st, part, seed=0)
    assert np.array_equal(split, assign_splits(st, part, seed=0))
    out = tmp_path / "sites"
    paths = write_sites(st, part, split, out)
    assert [p.stem for p in paths] == part.sites
    schema = Schema.load(out / "schema.yaml")
    assert "site" not in schema.columns and schema.columns["split"] == "split"
    assert schema.shapes == {"image": [3, 16, 16]} and schema.classes == ["negative", "positive"]
    frames = []
    for path in paths:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert list(frame.columns[:3]) == ["sample_id", "label", "split"]
        assert list(frame.columns) == list(schema.columns)
        for col in ("image", "series"):
            for rel in frame[col][frame[col] != ""]:
                assert not os.path.isabs(rel) and (out / rel).resolve().is_file()
        frames.append(frame)
    back = pd.concat(frames, ignore_index=True).set_index("sample_id").loc[st.table["sample_id"]]
    assert (back["label"].to_numpy() == st.table["label"].to_numpy()).all()
    assert (back["split"].to_numpy() == split).all()
    dropped = part.drop["image"]
    assert (back["image"].to_numpy()[dropped] == "").all()
    kept = ~dropped & st.table["image"].notna().to_numpy()
    assert (back["image"].to_numpy()[kept] != "").all()
    num = pd.to_numeric(back["num_1"].replace("", np.nan)).to_numpy()
    np.testing.assert_allclose(num, st.table["num_1"].to_numpy(), equal_nan=True)
    # rewriting the same sites is fine; a stale site from another run is refused
    write_sites(st, part, split, out)
    (out / "old_site.csv").write_text("sample_id\n")
    with pytest.raises(FileExistsError, match="old_site"):
        write_sites(st, part, split, out)
    assert not list(out.glob("*.tmp"))


def test_tabular_drop_and_survival(tmp_path) -> None:
    st = load_dataset("gse7390_breast")
    part = make_partition("missing_modality", st, num_sites=3, seed=0, modality="omics", sample_fraction=0.5,
                          base="quantity", base_params={"beta": 5.0})
    split = assign_splits(st, part, seed=0)
    paths = write_sites(st, part, split, tmp_path)
    frame = pd.concat([pd.read_csv(p) for p in paths])
    assert list(frame.columns[:4]) == ["sample_id", "time", "event", "split"]
    probes = Schema.load(tmp_path / "schema.yaml").columns_with("omics")
    assert len(probes) == 76
    assert abs(frame[probes[0]].isna().mean() - 0.5) < 0.05
    assert frame["grade"].isna().sum() == 2
    assert set(frame["split"]) == {"train", "val", "test"}


def test_written_sites_load_as_manifests(synthetic, tmp_path) -> None:
    st = synthetic
    part = make_partition("natural", st, num_sites=0, seed=0)
    out = tmp_path / "sites"
    write_sites(st, part, assign_splits(st, part, seed=0), out)
    back = load_dataset("manifests", root=out)
    assert back.site_column == "site" and sorted(back.table["site"].unique()) == part.sites
    assert len(back.table) == len(st.table) and back.schema.task == "binary"
    merged = back.table.set_index("sample_id").loc[st.table["sample_id"]]
    assert (merged["image"].fillna("").to_numpy() == st.table["image"].fillna("").to_numpy()).all()
    np.testing.assert_allclose(merged["num_0"].to_numpy(), st.table["num_0"].to_numpy(), equal_nan=True)
    again = make_partition("natural", back, num_sites=0, seed=0)
    by_id = dict(zip(back.table["sample_id"], again.site))
    assert [by_id[i] for i in st.table["sample_id"]] == list(part.site)
