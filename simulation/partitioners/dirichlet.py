"""Label-skewed sites: each class is spread over the sites by a Dirichlet(alpha) draw.

Reference: Hsu T.-M. H., Qi H., Brown M. Measuring the Effects of Non-Identical Data
Distribution for Federated Visual Classification. arXiv:1909.06335 (2019); Yurochkin M. et
al. Bayesian Nonparametric Federated Learning of Neural Networks. ICML (2019).
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


@PARTITIONERS.register("dirichlet")
def partition(
    table: SampleTable, *, num_sites: int, seed: int, alpha: float = 0.5, min_samples: int = 10, max_tries: int = 1000
) -> Partition:
    """For each class, draw site shares from Dirichlet(alpha) and deal that class's groups out.

    Small ``alpha`` gives sites dominated by few classes; large ``alpha`` approaches IID. The
    class of a group is its most common label (survival: event; regression: quantile bin).

    Args:
        table: the sample table.
        num_sites: number of sites (``site_00`` ...).
        seed: the draw seed.
        alpha: Dirichlet concentration (> 0).
        min_samples: rows every site must get; draws are repeated until it holds.
        max_tries: draws before giving up with an error.

    Returns:
        The partition.
    """
    if alpha <= 0:
        raise ValueError(f"partition 'dirichlet': alpha must be > 0, got {alpha}")
    groups = table_groups(table)
    check_min_samples(table, num_sites=num_sites, min_samples=min_samples, groups=groups)
    rng = np.random.default_rng(seed)
    strata = sorted(set(groups.stratum.tolist()))
    members = {k: np.flatnonzero(groups.stratum == k) for k in strata}
    for _ in range(max_tries):
        group_site = np.empty(len(groups), dtype=int)
        for k in strata:
            idx = rng.permutation(members[k])
            shares = rng.dirichlet(np.full(num_sites, alpha))
            group_site[idx] = deal_by_proportion(groups.size[idx], shares)
        load = np.bincount(group_site, weights=groups.size, minlength=num_sites)
        if load.min() >= min_samples:
            names = np.array(site_names(num_sites))
            return Partition(site=names[groups.to_rows(group_site)])
    raise ValueError(
        f"partition 'dirichlet': no draw in {max_tries} gave every one of {num_sites} sites >= {min_samples} rows "
        f"(dataset {table.name!r}, alpha={alpha}); raise alpha, or lower min_samples or num_sites"
    )
