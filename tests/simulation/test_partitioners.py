"""Partitioners: complete, disjoint, group-preserving; skew grows as alpha/beta shrink;
missing-modality fractions are as asked."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from simulation.datasets import SampleTable, load_dataset
from simulation.partitioners import PARTITIONERS, Partition, make_partition


def grouped_table(n: int = 300, seed: int = 0, survival: bool = False) -> SampleTable:
    """A small synthetic tabular+omics table whose rows come in groups of 1-3."""
    st = load_dataset("synthetic", n_samples=n, modalities=["tabular", "omics"], n_omics=8, n_natural_sites=3, seed=seed)
    t = st.table.copy()
    rng = np.random.default_rng(seed)
    t["group_id"] = [f"g{k}" for k in np.repeat(np.arange(n), rng.integers(1, 4, n))[:n]]
    columns = {**st.schema.columns, "group_id": "group"}
    schema = dataclasses.replace(st.schema, columns=columns)
    if survival:
        t["time"] = rng.uniform(10, 1000, n)
        t["event"] = (t.pop("label") == "positive").astype(int)
        columns = {c: r for c, r in columns.items() if c != "label"} | {"time": "time", "event": "event"}
        schema = dataclasses.replace(st.schema, columns=columns, task="survival", classes=None)
    return SampleTable(name="grouped", table=t, schema=schema, site_column="site", description="test")


pytestmark = pytest.mark.filterwarnings("ignore:.*span several values:UserWarning")

CASES = [
    ("natural", {}),
    ("iid", {}),
    ("dirichlet", {"alpha": 0.5, "min_samples": 5}),
    ("quantity", {"beta": 1.0, "min_samples": 5}),
    ("missing_modality", {"modality": "omics", "site_fraction": 0.5}),
    ("missing_modality", {"modality": "tabular", "sample_fraction": 0.3, "base": "dirichlet",
                          "base_params": {"alpha": 1.0, "min_samples": 5}}),
]


@pytest.mark.parametrize("survival", [False, True])
@pytest.mark.parametrize("name,params", CASES)
def test_complete_disjoint_group_preserving(name: str, params: dict, survival: bool) -> None:
    st = grouped_table(survival=survival)
    p = make_partition(name, st, num_sites=4, seed=1, **params)
    assert isinstance(p, Partition) and p.site.shape == (len(st),)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", s) for s in p.sites)
    # every row on exactly one site; every group on one site
    assert pd.DataFrame({"g": st.table["group_id"], "s": p.site}).groupby("g")["s"].nunique().max() == 1
    if name != "natural":
        assert len(p.sites) == 4
    again = make_partition(name, st, num_sites=4, seed=1, **params)
    assert np.array_equal(p.site, again.site)


def test_registry_has_all() -> None:
    assert PARTITIONERS.names() == ["dirichlet", "iid", "missing_modality", "natural", "quantity"]
    with pytest.raises(TypeError, match="parameters"):
        make_partition("iid", grouped_table(), num_sites=2, seed=0, alpha=1.0)


def test_natural_errors_and_ham_lesions() -> None:
    gse = load_dataset("gse7390_breast")
    with pytest.raises(ValueError, match="gse7390_breast"):
        make_partition("natural", gse, num_sites=3, seed=0)
    ham = load_dataset("ham10000")
    with pytest.warns(UserWarning, match="9 group"):
        p = make_partition("natural", ham, num_sites=0, seed=0)
    assert len(p.sites) == 4
    assert pd.DataFrame({"g": ham.table["group_id"], "s": p.site}).groupby("g")["s"].nunique().max() == 1
    exact = make_partition("natural", ham, num_sites=0, seed=0, keep_groups=False)
    assert pd.Series(exact.site).value_counts()["vidir_molemax"] == 3954


def _label_skew(st: SampleTable, p: Partition) -> float:
    """Mean over sites of the total-variation distance of the site's label mix to the global one."""
    labels = st.table["label"]
    overall = labels.value_counts(normalize=True)
    tv = [0.5 * (labels[p.site == s].value_counts(normalize=True).reindex(overall.index, fill_value=0) - overall).abs().sum()
          for s in p.sites]
    return float(np.mean(tv))


def test_dirichlet_smaller_alpha_more_skew() -> None:
    st = grouped_table(n=400)
    skew = {a: np.mean([_label_skew(st, make_partition("dirichlet", st, num_sites=5, seed=s, alpha=a, min_samples=5))
                        for s in range(5)]) for a in (0.1, 1.0, 100.0)}
    assert skew[0.1] > skew[1.0] > skew[100.0]
    with pytest.raises(ValueError, match="min_samples"):
        make_partition("dirichlet", st, num_sites=5, seed=0, alpha=0.5, min_samples=100)


def test_quantity_smaller_beta_more_size_skew() -> None:
    st = grouped_table(n=400)

    def spread(beta: float) -> float:
        sizes = [pd.Series(make_partition("quantity", st, num_sites=5, seed=s, beta=beta, min_samples=2).site).value_counts()
                 for s in range(5)]
        return float(np.mean([v.std() / v.mean() for v in sizes]))

    assert spread(0.3) > spread(100.0)
    iid_sizes = pd.Series(make_partition("iid", st, num_sites=5, seed=0).site).value_counts()
    assert iid_sizes.max() - iid_sizes.min() <= 3


def test_missing_modality_fractions() -> None:
    st = grouped_table(n=400)
    p = make_partition("missing_modality", st, num_sites=4, seed=0, modality="omics", site_fraction=0.5)
    lacking = [s for s in p.sites if p.drop["omics"][p.site == s].all()]
    assert len(lacking) == 2 and all(not p.drop["omics"][p.site == s].any() for s in set(p.sites) - set(lacking))
    q = make_partition("missing_modality", st, num_sites=4, seed=0, modality="tabular", sample_fraction=0.25)
    for s in q.sites:
        assert abs(q.drop["tabular"][q.site == s].mean() - 0.25) < 0.02
    base = make_partition("iid", st, num_sites=4, seed=0)
    assert np.array_equal(base.site, q.site)
    with pytest.raises(ValueError, match="image"):
        make_partition("missing_modality", st, num_sites=4, seed=0, modality="image", site_fraction=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        make_partition("missing_modality", st, num_sites=4, seed=0, modality="omics")
