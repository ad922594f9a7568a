"""Carve a data set into virtual sites written as manifests, exactly as hospitals prepare them,
and say in a few lines how the sites are read (``sites/schema.txt``)."""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path

import numpy as np

from client.atomic_io import atomic_write_text
from client.manifest import Manifest, read_manifest_folder
from client.site_schema import describe_sites
from simulation.config import SimulationConfig
from simulation.datasets import DATASETS, SampleTable, load_dataset
from simulation.partitioners import make_partition
from simulation.site_writer import assign_splits, write_sites

__all__ = ["prepare_sites", "load_table", "subsample", "schema_summary", "describe_run", "SCHEMA_SUMMARY"]

#: The schema in words, beside the manifests of the run.
SCHEMA_SUMMARY = "schema.txt"


def subsample(table: SampleTable, *, max_samples: int, seed: int) -> SampleTable:
    """Keep whole groups (lesions, patients) drawn at random until ``max_samples`` rows."""
    codes = table.group_codes()
    sizes = np.bincount(codes)
    order = np.random.default_rng(seed).permutation(len(sizes))
    keep = order[: int(np.searchsorted(np.cumsum(sizes[order]), max_samples, side="right"))]
    rows = np.isin(codes, keep)
    return replace(table, table=table.table[rows].reset_index(drop=True))


def load_table(config: SimulationConfig, run_dir: Path) -> SampleTable:
    """Load the configured data set; generated files (synthetic data) go into the run folder."""
    params = dict(config.data_params)
    root = config.data_root
    if config.dataset == "synthetic":
        root = root or str(run_dir / "synthetic_data")
        params.setdefault("seed", config.run.seed)
    task = None if config.run.task == "auto" else config.run.task
    _check_params(config.dataset, params)
    return load_dataset(config.dataset, root=root, task=task, **params)


def _check_params(dataset: str, params: dict) -> None:
    """``data.params`` must name parameters of the dataset's loader (a typo would stop it later)."""
    accepted = inspect.signature(DATASETS.get(dataset)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        known = [name for name in accepted if name not in ("root", "task")]
        raise ValueError(f"data.params: dataset {dataset!r} has no parameter {', '.join(unknown)}; its parameters "
                         f"are {known} (data.root and task= are set apart)")  # fmt: skip


def schema_summary(table: SampleTable, manifests: list[Manifest]) -> str:
    """How the run reads its sites: roles, task, classes per site, and what was inferred."""
    tables = [(m.site, m.table) for m in manifests]
    return describe_sites(manifests[0].schema, manifests[0].task, tables, inferred=table.inferred)


def prepare_sites(config: SimulationConfig, run_dir: Path) -> tuple[SampleTable, list[Manifest]]:
    """Load, partition and split the data, write ``run_dir/sites/<site>.csv`` + ``schema.yaml``,
    read them back through the same validation a deployed site runs, and write
    ``schema_summary`` into ``run_dir/sites/schema.txt``. The returned table holds the rows the
    run used, and its description says so (see :func:`describe_run`)."""
    table = load_table(config, run_dir)
    full_rows = len(table)
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
    # Headers only (existence, format, shape): every site decodes its own files in the
    # statistics round anyway, and decoding them here too delayed the submission by about
    # 1 s on the full HAM10000 (0.25 s per 2,000 images).
    manifests = read_manifest_folder(sites_dir, task=task, decode_files=False)
    atomic_write_text(sites_dir / SCHEMA_SUMMARY, schema_summary(table, manifests) + "\n")
    description = describe_run(table, full_rows=full_rows, max_samples=config.max_samples, partition=name,
                               partition_params=config.partition_params, sites=len(manifests))  # fmt: skip
    return replace(table, description=description), manifests


def describe_run(
    table: SampleTable,
    *,
    full_rows: int,
    max_samples: int | None,
    partition: str,
    partition_params: dict,
    sites: int,
) -> str:
    """The loader's line about the data set, then what this run used of it: the rows kept
    (after ``max_samples``) and the partition that made the sites.

    Args:
        table: the rows this run used (after subsampling), with the loader's description.
        full_rows: rows of the data set before subsampling.
        max_samples: the ``max_samples`` setting (None: all rows).
        partition: the partition that ran (``auto`` resolved).
        partition_params: its parameters, as configured.
        sites: sites written.
    """
    groups = len(np.unique(table.group_codes()))
    if len(table) < full_rows:
        rows = (f"{len(table):,} of its {full_rows:,} samples ({groups:,} groups; "
                f"max_samples={max_samples} keeps whole groups)")
    else:
        rows = f"all {len(table):,} samples ({groups:,} groups)"
    params = ", ".join(f"{k}={v}" for k, v in sorted(partition_params.items()))
    how = f"partition {partition}" + (f" ({params})" if params else "")
    return f"{table.description}. This run: {rows}, {how} into {sites} sites"
