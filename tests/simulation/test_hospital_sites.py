"""Sites as hospitals have them, through ``prepare_sites``: ids that overlap between sites,
every role under another name, and the schema summary written beside the run's manifests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from client.data import load_site_dataset
from client.features import merge_statistics, site_statistics
from client.schema import CANONICAL_NAMES
from simulation.cli import CONFIG_DIR
from simulation.config import SimulationConfig
from simulation.datasets import SampleTable, load_dataset
from simulation.partitioners import make_partition
from simulation.prepare import SCHEMA_SUMMARY, prepare_sites, schema_summary
from simulation.scoring import _partition_summary

SITES = {"north": 40, "south": 32, "east": 24}


def _config(*overrides: str) -> SimulationConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return SimulationConfig.from_cfg(compose(config_name="config", overrides=list(overrides)))


def write_sites(
    folder: Path, *, survival: bool = False, split: bool = False, rename: dict[str, str] | None = None
) -> Path:
    """Tabular sites numbering their samples 1..n and their patients p1..; ``rename`` maps
    canonical column names to the names written, declared in schema.yaml."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    roles = {name: role for role, name in CANONICAL_NAMES.items()}
    for site, n in SITES.items():
        y = (rng.random(n) < 0.4).astype(int)
        frame = pd.DataFrame({"sample_id": np.arange(1, n + 1)})
        if survival:
            frame["time"] = rng.exponential(300 / (1 + y)).round(1)
            frame["event"] = y
        else:
            frame["label"] = np.where(y == 1, "sick", "well")
        frame["group_id"] = [f"p{i // 2}" for i in range(n)]
        if split:
            frame["split"] = (["train"] * 4 + ["val"] * 2 + ["test"] * 2) * (n // 8)  # whole patients
        frame["chol"] = (200 + 40 * y + rng.normal(0, 20, n)).round(1)
        frame["sex"] = rng.choice(["F", "M"], n)
        frame.rename(columns=rename or {}).to_csv(folder / f"{site}.csv", index=False)
    if rename:
        declared = "\n".join(f"  {new}: {roles[old]}" for old, new in rename.items())
        (folder / "schema.yaml").write_text(f"schema_version: 1\ncolumns:\n{declared}\n")
    return folder


def _encoded(manifests) -> tuple[object, dict[tuple[str, str], object]]:
    stats = [site_statistics(m) for m in manifests]
    spec = merge_statistics(stats, schema=manifests[0].schema, task=manifests[0].task)
    data = {(m.site, s): load_site_dataset(m, spec, split=s) for m in manifests for s in ("train", "val", "test")}
    return spec, data


# (what is renamed, survival?, given split?)
RENAMES = [
    ({"sample_id": "pid"}, False, False),
    ({"label": "diagnosis"}, False, False),
    ({"group_id": "patient"}, False, False),
    ({"split": "fold"}, False, True),
    ({"time": "days", "event": "died"}, True, False),
    ({"sample_id": "pid", "label": "target", "group_id": "patient", "split": "fold"}, False, True),
]


@pytest.mark.parametrize(("rename", "survival", "split"), RENAMES, ids=["-".join(r[0].values()) for r in RENAMES])
def test_a_renamed_role_trains_exactly_as_under_its_canonical_name(tmp_path, rename, survival, split) -> None:
    canonical = write_sites(tmp_path / "canonical", survival=survival, split=split)
    renamed = write_sites(tmp_path / "renamed", survival=survival, split=split, rename=rename)
    _, expected = prepare_sites(_config("data=manifests", f"data.dir={canonical}"), tmp_path / "run_a")
    _, manifests = prepare_sites(_config("data=manifests", f"data.dir={renamed}"), tmp_path / "run_b")
    for new in rename.values():
        assert new in manifests[0].schema.columns
    spec_a, data_a = _encoded(expected)
    spec_b, data_b = _encoded(manifests)
    assert spec_a == spec_b and spec_b.task == ("survival" if survival else "binary")
    for key, a in data_a.items():
        b = data_b[key]
        assert a.sample_ids == b.sample_ids and len(a) > 0, key
        assert torch.equal(a.target, b.target) and torch.equal(a.present, b.present)
        assert all(torch.equal(a.inputs[m], b.inputs[m]) for m in a.modalities)
    assert _partition_summary(expected, spec_a.task) == _partition_summary(manifests, spec_b.task)
    groups = manifests[0].schema.group_column
    written = manifests[0].table
    assert (written.groupby(groups)[manifests[0].schema.split_column].nunique() == 1).all()


def test_ids_overlapping_across_three_sites(tmp_path) -> None:
    source = write_sites(tmp_path / "mine")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "group spans several sites": p1 at north is not p1 at south
        table, manifests = prepare_sites(_config("data=manifests", f"data.dir={source}"), tmp_path / "run")
    assert table.ids_per_site and sorted(m.site for m in manifests) == sorted(SITES)
    for m in manifests:
        assert m.table["sample_id"].tolist() == [str(i) for i in range(1, SITES[m.site] + 1)]
    # Re-carved sites mix the user's sites, so their ids are qualified by the site of origin.
    _, mixed = prepare_sites(_config("data=manifests", f"data.dir={source}", "partition=iid", "num_sites=2"),
                             tmp_path / "run_iid")  # fmt: skip
    ids = pd.concat([m.table["sample_id"] for m in mixed])
    assert len(ids) == sum(SITES.values()) and ids.is_unique
    assert set(ids.str.split("/").str[0]) == set(SITES)
    for m in mixed:
        assert (m.table.groupby("group_id")["split"].nunique() == 1).all()


def test_a_sample_table_with_per_site_ids(tmp_path) -> None:
    source = write_sites(tmp_path / "mine")
    table = load_dataset("manifests", root=source)
    codes = table.group_codes()
    north_p0 = codes[((table.table["site"] == "north") & (table.table["group_id"] == "p0")).to_numpy()]
    south_p0 = codes[((table.table["site"] == "south") & (table.table["group_id"] == "p0")).to_numpy()]
    assert len(set(north_p0)) == 1 and set(north_p0).isdisjoint(south_p0)
    assert len(make_partition("iid", table, num_sites=3, seed=0).sites) == 3  # groups never span sites
    frame = table.table.copy()
    frame.loc[1, "sample_id"] = frame.loc[0, "sample_id"]
    with pytest.raises(ValueError, match="sample_id is not unique at site 'east'"):
        SampleTable(name="x", table=frame, schema=table.schema, site_column="site", description="", ids_per_site=True)


def test_prepare_writes_what_it_read_into_the_run_folder(tmp_path) -> None:
    source = write_sites(tmp_path / "mine", rename={"label": "target"})
    table, manifests = prepare_sites(_config("data=manifests", f"data.dir={source}"), tmp_path / "run")
    text = (tmp_path / "run" / "sites" / SCHEMA_SUMMARY).read_text()
    assert text == schema_summary(table, manifests) + "\n"
    assert "  label        target" in text.splitlines() and "  numeric      chol*" in text.splitlines()
    assert "task: binary (inferred from the labels)" in text
    assert "well" in text and "north" in text
