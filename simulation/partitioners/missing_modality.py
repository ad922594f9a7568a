"""Missing modalities: sites from a base partitioner, then one modality removed at some
sites (``site_fraction``) or from some samples of every site (``sample_fraction``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from simulation.datasets.base import SampleTable
from simulation.partitioners.base import PARTITIONERS, Partition, make_partition

__all__ = ["partition"]


@PARTITIONERS.register("missing_modality")
def partition(
    table: SampleTable,
    *,
    num_sites: int,
    seed: int,
    modality: str,
    base: str = "iid",
    base_params: dict[str, Any] | None = None,
    site_fraction: float | None = None,
    sample_fraction: float | None = None,
) -> Partition:
    """Partition with ``base``, then mark ``modality`` as removed where chosen.

    Args:
        table: the sample table.
        num_sites: number of sites, passed to ``base``.
        seed: seeds ``base`` and the choice of sites / samples.
        modality: the modality to remove (image, tabular, series or omics); it must be in the table.
        base: the partitioner that makes the sites.
        base_params: options for ``base``.
        site_fraction: this fraction of the sites (rounded, at least one when > 0) lack the
            modality entirely.
        sample_fraction: this fraction of each site's samples (rounded per site) lack it.

    Returns:
        The base partition with ``drop[modality]`` set (or-ed with any drop the base made).
    """
    if modality not in table.schema.modalities:
        raise ValueError(f"partition 'missing_modality': dataset {table.name!r} has no modality {modality!r}; "
                         f"it has {table.schema.modalities}")
    if (site_fraction is None) == (sample_fraction is None):
        raise ValueError("partition 'missing_modality': give exactly one of site_fraction and sample_fraction")
    fraction = site_fraction if site_fraction is not None else sample_fraction
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"partition 'missing_modality': the fraction must be in [0, 1], got {fraction}")
    result = make_partition(base, table, num_sites=num_sites, seed=seed, **(base_params or {}))
    # A separate stream, so the base partition is the same with or without this step.
    rng = np.random.default_rng([seed, 0x4D4D])
    sites = result.sites
    drop = np.zeros(len(table), dtype=bool)
    if site_fraction is not None:
        k = int(round(site_fraction * len(sites)))
        k = max(k, 1) if site_fraction > 0 else 0
        chosen = rng.choice(sites, size=k, replace=False) if k else []
        drop = np.isin(result.site, list(chosen))
    else:
        for s in sites:
            rows = np.flatnonzero(result.site == s)
            k = int(round(sample_fraction * len(rows)))
            drop[rng.choice(rows, size=k, replace=False)] = True
    merged = dict(result.drop)
    merged[modality] = merged.get(modality, np.zeros(len(table), dtype=bool)) | drop
    return Partition(site=result.site, drop=merged)
