"""Natural sites: each row goes to the site named in a column of the data (hospital, source).

Reference: Ogier du Terrail J. et al. FLamby: Datasets and Benchmarks for Cross-Silo
Federated Learning in Realistic Healthcare Settings. NeurIPS Datasets and Benchmarks (2022).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from simulation.datasets.base import SampleTable
from simulation.partitioners.base import PARTITIONERS, Partition, safe_site_name, table_groups

__all__ = ["partition"]


@PARTITIONERS.register("natural")
def partition(
    table: SampleTable, *, num_sites: int | None = None, seed: int = 0, column: str | None = None, keep_groups: bool = True
) -> Partition:
    """One site per distinct value of the natural site column.

    Args:
        table: the sample table.
        num_sites: ignored (the data decides how many sites there are).
        seed: ignored (nothing is random).
        column: the site column; default ``table.site_column``.
        keep_groups: move a group whose rows name several sites wholly to its most common
            site (ties: the first name in sorted order), with a warning. False follows the
            column exactly, so such a group spans sites (HAM10000 has 9 lesions imaged at
            both vidir_modern and vidir_molemax).

    Returns:
        The partition; site names are the column's values made file-name safe.
    """
    column = column or table.site_column
    if column is None:
        raise ValueError(
            f"dataset {table.name!r} has no natural site column, so partition 'natural' cannot be used; "
            "choose iid, dirichlet, quantity or missing_modality"
        )
    if column not in table.table.columns:
        raise ValueError(f"dataset {table.name!r} has no column {column!r}; columns: {list(table.table.columns)}")
    values = table.table[column]
    empty = values.isna() | (values.astype(str).str.strip() == "")
    if empty.any():
        raise ValueError(f"dataset {table.name!r}: column {column!r} is empty in {int(empty.sum())} row(s), "
                         f"e.g. sample {table.table[table.schema.id_column][empty].iloc[0]!r}; every row needs a site")
    raw = values.astype(str).to_numpy()
    safe = {v: safe_site_name(v) for v in set(raw)}
    by_name: dict[str, list[str]] = {}
    for v, name in safe.items():
        by_name.setdefault(name, []).append(v)
    clashes = sorted(sorted(vs) for vs in by_name.values() if len(vs) > 1)
    if clashes:
        raise ValueError(f"dataset {table.name!r}: values of column {column!r} collide once made file-name safe: "
                         f"{clashes}; rename them")
    site = np.array([safe[v] for v in raw], dtype=object)
    groups = table_groups(table)
    frame = pd.DataFrame({"g": groups.index, "site": site})
    per_group = frame.groupby(["g", "site"]).size().reset_index(name="n")
    spanning = per_group["g"].duplicated().sum()
    if spanning and keep_groups:
        warnings.warn(f"dataset {table.name!r}: {spanning} group(s) span several values of {column!r}; "
                      "each goes wholly to its most common site")
        best = per_group.sort_values(["g", "n", "site"], ascending=[True, False, True]).drop_duplicates("g")
        site = groups.to_rows(best.set_index("g")["site"].reindex(range(len(groups))).to_numpy())
    return Partition(site=np.asarray(site, dtype=str))
