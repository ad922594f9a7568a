"""Carve a data set into virtual sites written as manifests, exactly as hospitals prepare them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from client.manifest import Manifest, read_manifest_folder
from simulation.config import SimulationConfig
from simulation.datasets import SampleTable, load_dataset
from simulation.partitioners import make_partition
from simulation.site_writer import assign_splits, write_sites

__all__ = ["prepare_sites", "load_table", "subsample"]


def subsample(table: SampleTable, *, max_samples: int, seed: int) -> SampleTable:
    """Keep whole groups (lesions, patients) drawn at random until ``max_samples`` rows."""
    frame = table.table
    groups = frame["group_id"].fillna(frame["sample_id"]) if "group_id" in frame.columns else frame["sample_id"]
    order = np.random.default_rng(seed).permutation(groups.unique())
    sizes = groups.value_counts()
    keep = set(order[: int(np.searchsorted(np.cumsum(sizes[order].to_numpy()), max_samples, side="right"))])
    rows = groups.isin(keep).to_numpy()
    return replace(table, table=frame[rows].reset_index(drop=True))


def load_table(config: SimulationConfig, run_dir: Path) -> SampleTable:
    """Load the configured data set; generated files (synthetic data) go into the run folder."""
    params = dict(config.data_params)
    root = config.data_root
    if config.dataset == "synthetic":
        root = root or str(run_dir / "synthetic_data")
        params.setdefault("seed", config.run.seed)
    task = None if config.run.task == "auto" else config.run.task
    return load_dataset(config.dataset, root=root, task=task, **params)


def prepare_sites(config: SimulationConfig, run_dir: Path) -> tuple[SampleTable, list[Manifest]]:
    """Load, partition and split the data, write ``run_dir/sites/<site>.csv`` + ``schema.yaml``,
    and read them back through the same validation a deployed site runs."""
    table = load_table(config, run_dir)
    if config.max_samples is not None and config.max_samples < len(table):
        table = subsample(table, max_samples=config.max_samples, seed=config.run.seed)
    name = config.partition
    if name == "auto":
        name = "natural" if table.site_column is not None else "iid"
    partition = make_partition(
        name, table, num_sites=config.run.num_sites, seed=config.run.seed, **config.partition_params
    )
    split = assign_splits(
        table, partition, seed=config.run.seed, val_fraction=config.val_fraction, test_fraction=config.test_fraction
    )
    sites_dir = run_dir / "sites"
    write_sites(table, partition, np.asarray(split), sites_dir)
    task = None if config.run.task == "auto" else config.run.task
    return table, read_manifest_folder(sites_dir, task=task)
