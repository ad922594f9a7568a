"""Public data sets (and a synthetic generator) as sample tables, registered by name.

``load_dataset("ham10000")`` returns a :class:`SampleTable`; ``DATASETS.names()`` lists what
is available. Each loader lives in its own module and registers itself on import.
"""

from __future__ import annotations

import inspect
from typing import Any

from simulation.datasets import eicu, gse7390_breast, ham10000, manifest_folder, synthetic, tcga_brca  # noqa: F401
from simulation.datasets.base import DATA_DIR, DATASETS, SampleTable

__all__ = ["DATASETS", "DATA_DIR", "SampleTable", "load_dataset"]


def load_dataset(name: str, **params: Any) -> SampleTable:
    """Load the dataset registered as ``name``.

    Args:
        name: a registered name (``DATASETS.names()``); an unknown name lists the known ones.
        **params: passed to the loader (``root``, ``task`` and dataset-specific options).

    Returns:
        The dataset's sample table.
    """
    loader = DATASETS.get(name)
    try:
        inspect.signature(loader).bind(**params)
    except TypeError as err:
        known = [p for p in inspect.signature(loader).parameters]
        raise TypeError(f"dataset {name!r}: {err}; its parameters are {known}") from None
    return loader(**params)
