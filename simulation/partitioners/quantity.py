"""Quantity-skewed sites: site sizes drawn from Dirichlet(beta), labels mixed at random.

Reference: Li Q., Diao Y., Chen Q., He B. Federated Learning on Non-IID Data Silos: An
Experimental Study. ICDE (2022).
"""

from __future__ import annotations

import numpy as np

from simulation.datasets.base import SampleTable
from simulation.partitioners.base import (
    PARTITIONERS,
    Partition,
    check_min_samples,
    deal_by_proportion,
    site_names,
    table_groups,
)

__all__ = ["partition"]


@PARTITIONERS.register("quantity")
def partition(
    table: SampleTable, *, num_sites: int, seed: int, beta: float = 0.5, min_samples: int = 10, max_tries: int = 1000
) -> Partition:
    """Shuffle the groups and cut them into sites whose shares come from Dirichlet(beta).

    Args:
        table: the sample table.
        num_sites: number of sites (``site_00`` ...).
        seed: the draw seed.
        beta: Dirichlet concentration (> 0); small values give very unequal sizes.
        min_samples: rows every site must get; draws are repeated until it holds.
        max_tries: draws before giving up with an error.

    Returns:
        The partition.
    """
    if beta <= 0:
        raise ValueError(f"partition 'quantity': beta must be > 0, got {beta}")
    groups = table_groups(table)
    check_min_samples(table, num_sites=num_sites, min_samples=min_samples, groups=groups)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        order = rng.permutation(len(groups))
        shares = rng.dirichlet(np.full(num_sites, beta))
        group_site = np.empty(len(groups), dtype=int)
        group_site[order] = deal_by_proportion(groups.size[order], shares)
        load = np.bincount(group_site, weights=groups.size, minlength=num_sites)
        if load.min() >= min_samples:
            names = np.array(site_names(num_sites))
            return Partition(site=names[groups.to_rows(group_site)])
    raise ValueError(
        f"partition 'quantity': no draw in {max_tries} gave every one of {num_sites} sites >= {min_samples} rows "
        f"(dataset {table.name!r}, beta={beta}); raise beta, or lower min_samples or num_sites"
    )
