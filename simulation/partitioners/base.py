"""What a partitioner returns, and the group bookkeeping every partitioner shares.

A partitioner assigns each row of a :class:`SampleTable` to a virtual site, and may remove
modalities from some rows (``drop``). Rows sharing a group (a lesion, a patient) always
land on the same site, so no group spans two sites. Partitioners work on groups: each group
is one unit with a size (its rows) and a stratum (its most common label, or event).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from fusion_models.registry import Registry
from simulation.datasets.base import SampleTable

__all__ = [
    "Partition", "PARTITIONERS", "Groups", "table_groups", "site_names", "safe_site_name", "check_min_samples",
    "deal_by_proportion", "make_partition",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_QUANTILE_BINS = 5


@dataclass
class Partition:
    """Site per row, and which rows lose which modality.

    Attributes:
        site: [N] str, the site of each row; names match ``[A-Za-z0-9_.-]+`` (file-name safe).
        drop: modality -> bool [N]; True means that row's modality is blanked at its site.
    """

    site: np.ndarray
    drop: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.site = np.asarray(self.site, dtype=str)
        bad = sorted({s for s in self.site if not s or _UNSAFE.search(s)})
        if bad:
            raise ValueError(f"site names must match [A-Za-z0-9_.-]+ (they become file names); found {bad[:5]}")
        for m, mask in self.drop.items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self.site.shape:
                raise ValueError(f"drop[{m!r}] has shape {mask.shape}; expected {self.site.shape} (one per row)")
            self.drop[m] = mask

    @property
    def sites(self) -> list[str]:
        """The distinct site names, sorted."""
        return sorted(set(self.site.tolist()))


#: Partitioners by name; each is ``partition(table, *, num_sites, seed, **params) -> Partition``.
PARTITIONERS: Registry[Callable[..., Partition]] = Registry("partitioner")


@dataclass
class Groups:
    """Rows collapsed into groups: ``index[i]`` is row i's group, ``size``/``stratum`` per group."""

    index: np.ndarray
    size: np.ndarray
    stratum: np.ndarray

    def __len__(self) -> int:
        return len(self.size)

    def to_rows(self, group_site: np.ndarray) -> np.ndarray:
        """Expand a per-group array (e.g. the site of each group) to a per-row array."""
        return np.asarray(group_site)[self.index]


def _row_strata(table: SampleTable) -> np.ndarray:
    """A discrete stratum per row: the label, the event for survival, quantile bins for regression."""
    frame, schema = table.table, table.schema
    label, event = schema.label_column, schema.event_column
    if schema.task == "regression" and label in frame.columns:
        values = pd.to_numeric(frame[label], errors="coerce")
        bins = pd.qcut(values.rank(method="first"), q=min(_QUANTILE_BINS, max(values.notna().sum(), 1)), labels=False)
        return bins.fillna(-1).astype(int).astype(str).to_numpy()
    if label in frame.columns:
        return frame[label].astype(str).to_numpy()
    if event in frame.columns:
        return frame[event].astype(str).to_numpy()
    return np.zeros(len(frame), dtype=str)


def table_groups(table: SampleTable) -> Groups:
    """Collapse the rows of ``table`` into groups (see ``SampleTable.group_codes``)."""
    codes = table.group_codes()
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    size = np.bincount(codes, minlength=n_groups)
    rows = pd.DataFrame({"g": codes, "s": _row_strata(table)})
    # Most common stratum per group; ties go to the first in sorted order.
    counts = rows.groupby(["g", "s"]).size().reset_index(name="n")
    counts = counts.sort_values(["g", "n", "s"], ascending=[True, False, True]).drop_duplicates("g")
    stratum = counts.set_index("g")["s"].reindex(range(n_groups)).to_numpy()
    return Groups(index=codes, size=size, stratum=np.asarray(stratum, dtype=str))


def site_names(num_sites: int) -> list[str]:
    """``site_00``, ``site_01``, ... (zero-padded so they sort in order)."""
    if num_sites < 1:
        raise ValueError(f"num_sites must be >= 1, got {num_sites}")
    width = max(2, len(str(num_sites - 1)))
    return [f"site_{i:0{width}d}" for i in range(num_sites)]


def safe_site_name(value: object) -> str:
    """A natural site value as a file-name-safe site name (``"Univ. Pittsburgh"`` -> ``Univ._Pittsburgh``)."""
    name = _UNSAFE.sub("_", str(value).strip()).strip("_")
    return name or "site"


def check_min_samples(table: SampleTable, *, num_sites: int, min_samples: int, groups: Groups) -> None:
    """Raise if ``num_sites`` sites of ``min_samples`` rows cannot be made from these groups."""
    if num_sites < 1:
        raise ValueError(f"num_sites must be >= 1, got {num_sites}")
    if len(groups) < num_sites:
        raise ValueError(f"dataset {table.name!r}: {len(groups)} groups cannot fill {num_sites} sites; use fewer sites")
    if num_sites * min_samples > int(groups.size.sum()):
        raise ValueError(
            f"dataset {table.name!r}: {num_sites} sites x min_samples={min_samples} needs "
            f"{num_sites * min_samples} rows, the table has {int(groups.size.sum())}; lower min_samples or num_sites"
        )


def deal_by_proportion(sizes: np.ndarray, proportions: np.ndarray) -> np.ndarray:
    """Site index for each of a sequence of groups, cutting their rows at ``proportions``.

    Groups are taken in the given order; a group goes to the site whose share of the
    cumulative row count holds the group's middle row, so no group is cut in two.

    Args:
        sizes: [G] rows per group, in dealing order.
        proportions: [S] non-negative shares summing to 1.

    Returns:
        [G] int site index per group.
    """
    sizes = np.asarray(sizes, dtype=float)
    if len(sizes) == 0:
        return np.zeros(0, dtype=int)
    middle = np.cumsum(sizes) - sizes / 2
    edges = np.cumsum(proportions)[:-1] * sizes.sum()
    return np.searchsorted(edges, middle, side="right").astype(int)


def make_partition(name: str, table: SampleTable, *, num_sites: int, seed: int, **params: object) -> Partition:
    """Run the partitioner registered as ``name`` and check what it returns.

    Args:
        name: a registered partitioner (``PARTITIONERS.names()``).
        table: the sample table.
        num_sites: number of sites (ignored by ``natural``).
        seed: the seed of every random draw.
        **params: partitioner-specific options (``alpha``, ``beta``, ``min_samples`` ...).

    Returns:
        The partition: one site per row, no group on two sites.
    """
    fn = PARTITIONERS.get(name)
    try:
        inspect.signature(fn).bind(table, num_sites=num_sites, seed=seed, **params)
    except TypeError as err:
        known = [p for p in inspect.signature(fn).parameters if p not in ("table", "num_sites", "seed")]
        raise TypeError(f"partition {name!r}: {err}; its parameters are {known}") from None
    result = fn(table, num_sites=num_sites, seed=seed, **params)
    if result.site.shape != (len(table),):
        raise ValueError(f"partition {name!r} returned {result.site.shape[0]} sites for {len(table)} rows")
    if params.get("keep_groups", True) is False:
        return result  # the caller asked for the column as is, groups spanning sites included
    groups = table_groups(table)
    per_group = pd.DataFrame({"g": groups.index, "s": result.site}).drop_duplicates()
    if per_group["g"].duplicated().any():
        raise ValueError(f"partition {name!r} put a group_id group on several sites")
    return result
