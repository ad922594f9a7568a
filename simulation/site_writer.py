"""Virtual sites written as the manifests a real site would hold: ``<site>.csv`` per site
plus one ``schema.yaml``, so simulation and deployment read data with the same client code."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from client.atomic_io import atomic_open
from client.schema import CANONICAL_NAMES, FILE_ROLES, SINGLE_ROLES, SPLITS, Schema
from client.splits import site_seed, split_site
from simulation.datasets.base import SampleTable
from simulation.partitioners.base import Partition

__all__ = ["assign_splits", "write_sites", "site_columns"]

# Group codes travel to split_site under a name no manifest header can hold (parse_csv
# refuses NUL bytes), so they never clash with a column.
_GROUP_CODE = "\0group"


def site_columns(table: SampleTable) -> list[str]:
    """Columns that are not written: the natural-site column and every ``ignore`` column."""
    dropped = set(table.schema.columns_with("ignore"))
    if table.site_column is not None:
        dropped.add(table.site_column)
    return [c for c in table.table.columns if c in dropped]


def assign_splits(
    table: SampleTable, partition: Partition, *, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.2
) -> np.ndarray:
    """Split every site's rows with :func:`split_site`, seeded per site from ``(seed, site)``.

    Args:
        table: the sample table.
        partition: the site of each row.
        seed: the run seed; each site gets ``site_seed(seed, site)``.
        val_fraction: target share of each site's rows in val.
        test_fraction: target share of each site's rows in test.

    Returns:
        [N] object array of ``"train"`` / ``"val"`` / ``"test"``.
    """
    if partition.site.shape != (len(table),):
        raise ValueError(f"the partition has {partition.site.shape[0]} rows, the table {len(table)}")
    schema = table.schema
    stratify = schema.label_column or schema.event_column
    columns = [c for c in (stratify, schema.split_column, schema.id_column) if c is not None]
    codes = table.group_codes()
    split = np.empty(len(table), dtype=object)
    for site in partition.sites:
        rows = np.flatnonzero(partition.site == site)
        local = table.table.iloc[rows][columns].assign(**{_GROUP_CODE: codes[rows]})
        split[rows] = split_site(
            local, seed=site_seed(seed, site), val_fraction=val_fraction, test_fraction=test_fraction,
            label_column=stratify, group_column=_GROUP_CODE, split_column=schema.split_column,
            id_column=schema.id_column,
        )  # fmt: skip
    return split


def _split_column(schema: Schema) -> str:
    """The split column's name: the schema's, else the canonical one (suffixed if taken)."""
    if schema.split_column is not None:
        return schema.split_column
    name, k = CANONICAL_NAMES["split"], 1
    while name in schema.columns:
        name, k = f"{CANONICAL_NAMES['split']}_{k}", k + 1
    return name


def _qualified(table: SampleTable, partition: Partition) -> pd.DataFrame:
    """The table with ids (and group ids) prefixed by their natural site (``north/17``) when
    ids are per site and a virtual site holds rows of several natural sites, so ids stay
    unique within every written site."""
    frame = table.table
    if not table.ids_per_site:
        return frame
    origin = frame[table.site_column].astype(str)
    mixed = pd.DataFrame({"site": partition.site, "origin": origin.to_numpy()}).groupby("site")["origin"].nunique()
    if (mixed <= 1).all():
        return frame
    frame = frame.copy()
    for column in (table.schema.id_column, table.schema.group_column):
        if column is not None and column in frame.columns:
            present = frame[column].notna()
            frame[column] = (origin + "/" + frame[column].astype(str)).where(present, None)
    return frame


def _file_cell(path: object, out: Path) -> str:
    """A file as a manifest cell: relative to the manifest when it lies inside the folder that
    holds ``out`` (files a run generated, which travel with a copied run folder), else absolute
    (the data root), so a copied or moved ``sites/`` folder still finds every file."""
    absolute = Path(os.path.abspath(str(path)))
    if absolute.is_relative_to(out.parent):
        return os.path.relpath(absolute, out)
    return str(absolute)


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_open(path, "w", newline="") as fh:
        frame.to_csv(fh, index=False)


def _blank(column: pd.Series, rows: np.ndarray) -> pd.Series:
    """``column`` with ``rows`` emptied: NaN for numbers, None otherwise."""
    column = column.copy()
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        column = column.astype(float)
        column[rows] = np.nan
    else:
        column = column.astype(object)
        column[rows] = None
    return column


def write_sites(table: SampleTable, partition: Partition, split: np.ndarray, out_dir: str | Path) -> list[Path]:
    """Write ``out_dir/<site>.csv`` for every site and ``out_dir/schema.yaml``.

    Each manifest has the id first, then label/time/event, group, split (the columns of
    those roles, under their names), then the features in table order; natural-site and
    ``ignore`` columns are left out; ids are qualified by their natural site where a
    virtual site mixes sites whose ids are per site (see ``_qualified``); image/series
    paths are absolute, except files inside ``out_dir``'s parent (the run folder), which are
    relative to ``out_dir`` (see ``_file_cell``); each modality in ``partition.drop`` is blanked in the
    rows marked. Every file is written to a temp file and moved into place.

    Args:
        table: the sample table.
        partition: the site of each row and the modalities dropped.
        split: [N] ``"train"`` / ``"val"`` / ``"test"`` per row (see ``assign_splits``).
        out_dir: the folder to write (created); it must not hold other sites' CSVs.

    Returns:
        The manifest paths, in site order (``schema.yaml`` is written beside them).
    """
    n = len(table)
    split = np.asarray(split, dtype=object)
    if partition.site.shape != (n,) or split.shape != (n,):
        raise ValueError(f"table has {n} rows, partition {partition.site.shape[0]}, split {split.shape[0]}; they must match")
    bad = sorted({str(s) for s in split} - set(SPLITS))
    if bad:
        raise ValueError(f"split values must be train/val/test, found {bad}")
    for modality in partition.drop:
        if modality not in table.schema.modalities:
            raise ValueError(f"the partition drops modality {modality!r}, which dataset {table.name!r} lacks "
                             f"(it has {table.schema.modalities})")
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    sites = partition.sites
    stale = sorted(p.name for p in out.glob("*.csv") if p.stem not in sites)
    if stale:
        raise FileExistsError(f"{str(out)!r} already holds manifests of other sites ({stale[:5]}); they would join "
                              "the federation: write to an empty folder")

    skip = set(site_columns(table))
    split_column = _split_column(table.schema)
    frame = _qualified(table, partition)
    frame = frame.drop(columns=[c for c in frame.columns if c in skip or c == split_column]).reset_index(drop=True)
    frame.insert(0, split_column, pd.Series(split, dtype=object))
    roles = {**table.schema.columns, split_column: "split"}
    leading = [c for role in SINGLE_ROLES for c in frame.columns if roles[c] == role]
    frame = frame[leading + [c for c in frame.columns if c not in leading]]
    for modality, mask in partition.drop.items():
        rows = np.flatnonzero(mask)
        for col in table.schema.modality_columns(modality):
            frame[col] = _blank(frame[col], rows)
    for col in table.schema.columns_with(*FILE_ROLES):
        if col in frame.columns:
            frame[col] = pd.Series(
                [None if p is None or (isinstance(p, float) and np.isnan(p)) else _file_cell(p, out)
                 for p in frame[col]],
                dtype=object,
            )

    columns = {c: roles[c] for c in frame.columns}
    schema = dataclasses.replace(
        table.schema,
        columns=columns,
        categories={c: v for c, v in table.schema.categories.items() if c in columns},
        shapes={c: v for c, v in table.schema.shapes.items() if c in columns},
    )
    paths = []
    for site in sites:
        path = out / f"{site}.csv"
        _atomic_csv(frame[partition.site == site], path)
        paths.append(path)
    schema.save(out / "schema.yaml")
    return paths
