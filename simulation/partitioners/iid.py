"""IID sites: groups shuffled and dealt out so that every site gets about as many rows."""

from __future__ import annotations

import numpy as np

from simulation.datasets.base import SampleTable
from simulation.partitioners.base import PARTITIONERS, Partition, check_min_samples, site_names, table_groups

__all__ = ["partition"]


@PARTITIONERS.register("iid")
def partition(table: SampleTable, *, num_sites: int, seed: int) -> Partition:
    """Shuffle the groups, then give each (largest first) to the site with the fewest rows.

    Args:
        table: the sample table.
        num_sites: number of sites (``site_00`` ...).
        seed: the shuffle seed.

    Returns:
        The partition; site sizes differ by at most the largest group.
    """
    groups = table_groups(table)
    check_min_samples(table, num_sites=num_sites, min_samples=1, groups=groups)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    order = order[np.argsort(-groups.size[order], kind="stable")]
    load = np.zeros(num_sites, dtype=int)
    group_site = np.empty(len(groups), dtype=int)
    for g in order:
        s = int(np.argmin(load))
        group_site[g] = s
        load[s] += groups.size[g]
    names = np.array(site_names(num_sites))
    return Partition(site=names[groups.to_rows(group_site)])
