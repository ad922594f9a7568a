"""Virtual sites carved from one sample table, registered by name.

``make_partition("dirichlet", table, num_sites=5, seed=0, alpha=0.3)`` returns a
:class:`Partition`; ``PARTITIONERS.names()`` lists what is available. Every partitioner keeps
each ``group_id`` group on one site.
"""

from __future__ import annotations

from simulation.partitioners import dirichlet, iid, missing_modality, natural, quantity  # noqa: F401
from simulation.partitioners.base import PARTITIONERS, Partition, make_partition

__all__ = ["PARTITIONERS", "Partition", "make_partition"]
