"""Dataset loaders: the vendored real sets load with the README's counts; synthetic is
deterministic, writes its files and carries signal in every modality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from simulation.datasets import DATASETS, SampleTable, load_dataset

HAM_SITES = {"vidir_molemax": 3954, "vidir_modern": 3363, "rosendahl": 2259, "vienna_dias": 439}


def _roles_cover(st: SampleTable) -> None:
    assert set(st.table.columns) == set(st.schema.columns)
    if st.site_column is not None:
        assert st.schema.columns[st.site_column] == "ignore"
    assert st.table["sample_id"].is_unique


def test_registry_names() -> None:
    assert {"ham10000", "tcga_brca", "gse7390_breast", "synthetic", "manifests"} <= set(DATASETS.names())
    with pytest.raises(KeyError, match="Did you mean"):
        load_dataset("ham1000")
    with pytest.raises(TypeError, match="parameters"):
        load_dataset("gse7390_breast", alpha=1)


def test_ham10000_binary() -> None:
    st = load_dataset("ham10000")
    _roles_cover(st)
    t = st.table
    assert len(t) == 10_015
    assert "dx_type" not in t.columns and "dx" not in t.columns
    assert st.site_column == "dataset"
    assert t["dataset"].value_counts().to_dict() == HAM_SITES
    assert (t["label"] == "malignant").sum() == 1_954
    assert t["group_id"].nunique() == 7_470
    assert st.schema.classes == ["benign", "malignant"]
    assert st.schema.shapes == {"image": [3, 32, 32]}
    assert t["age"].isna().sum() == 57 + 39  # empty and 0.0 are both unknown
    assert t["sex"].isna().sum() == 57 and t["localization"].isna().sum() == 234
    assert t["sex"][t["sex"].isna()].iloc[0] is None
    assert len(st.schema.categories["localization"]) == 14
    assert t["image"].map(lambda p: p.startswith("/")).all()
    assert st.schema.modalities == ["image", "tabular"]


def test_ham10000_multiclass_and_user_root(tmp_path) -> None:
    st = load_dataset("ham10000", task="multiclass")
    assert st.table["label"].nunique() == 7 and st.schema.classes == sorted(st.table["label"].unique())
    # A user copy without the image column: images found by image_id, shape read from a file.
    src = pd.read_csv(st.table["image"].iloc[0].rsplit("/images/", 1)[0] + "/metadata.csv").head(5)
    (tmp_path / "images").mkdir()
    for image_id in src["image_id"]:
        Image.new("RGB", (64, 48)).save(tmp_path / "images" / f"{image_id}.jpg")
    src.drop(columns=["image"]).to_csv(tmp_path / "metadata.csv", index=False)
    user = load_dataset("ham10000", root=tmp_path)
    assert len(user.table) == 5 and user.schema.shapes == {"image": [3, 48, 64]}
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        load_dataset("ham10000", root=tmp_path / "images")


def test_tcga_brca() -> None:
    st = load_dataset("tcga_brca")
    _roles_cover(st)
    assert len(st.table) == 1_088 and st.table["region"].nunique() == 6
    assert len(st.schema.columns_with("numeric")) == 39
    assert st.table["event"].dtype.kind == "i" and st.table["time"].dtype.kind == "f"
    assert st.schema.task == "survival"
    assert len(load_dataset("tcga_brca", include_other=True).table) == 1_096


def test_gse7390() -> None:
    st = load_dataset("gse7390_breast")
    _roles_cover(st)
    assert len(st.table) == 198 and st.site_column is None
    assert len(st.schema.columns_with("omics")) == 76
    assert st.table["grade"].isna().sum() == 2
    assert int(st.table["event"].sum()) == 51
    assert st.schema.modalities == ["tabular", "omics"]


def test_synthetic_deterministic_and_files(tmp_path) -> None:
    kw = dict(n_samples=40, modalities=["image", "tabular", "omics", "series"], missing={"image": 0.25}, seed=3)
    a = load_dataset("synthetic", root=tmp_path / "a", **kw)
    b = load_dataset("synthetic", root=tmp_path / "b", **kw)
    _roles_cover(a)
    cols = [c for c in a.table.columns if c not in ("image", "series")]
    pd.testing.assert_frame_equal(a.table[cols], b.table[cols])
    assert (a.table["image"].isna() == b.table["image"].isna()).all()
    pa, pb = a.table["image"].dropna().iloc[0], b.table["image"].dropna().iloc[0]
    assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))
    assert Image.open(pa).mode == "RGB" and Image.open(pa).size == (16, 16)
    series = np.load(a.table["series"].iloc[0])
    assert series.shape == (24, 3) and series.dtype == np.float32
    assert 5 <= a.table["image"].isna().sum() <= 15
    c = load_dataset("synthetic", root=tmp_path / "c", **{**kw, "seed": 4})
    assert not c.table["num_1"].equals(a.table["num_1"])
    with pytest.raises(ValueError, match="root"):
        load_dataset("synthetic", modalities=["image"])


def test_synthetic_signal_per_modality() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    st = load_dataset("synthetic", n_samples=800, modalities=["tabular", "omics"], n_natural_sites=3, seed=0)
    t = st.table
    y = (t["label"] == "positive").to_numpy()
    assert set(t["site"]) == {"site_0", "site_1", "site_2"}
    feats = {"tabular": ["num_0", "num_1", "num_2"], "omics": st.schema.columns_with("omics")}
    feats["both"] = feats["tabular"] + feats["omics"]

    def auc(cols: list[str]) -> float:
        x = t[cols].fillna(t[cols].mean()).to_numpy()
        model = LogisticRegression(max_iter=2000).fit(x[:500], y[:500])
        return roc_auc_score(y[500:], model.predict_proba(x[500:])[:, 1])

    scores = {k: auc(v) for k, v in feats.items()}
    assert scores["tabular"] > 0.7 and scores["omics"] > 0.7
    assert scores["both"] > max(scores["tabular"], scores["omics"])
    no_signal = load_dataset("synthetic", n_samples=800, modalities=["omics"], signal={"omics": 0.0}, seed=0)
    t = no_signal.table
    y = (t["label"] == "positive").to_numpy()
    assert auc(feats["omics"]) < 0.65
