"""Fusion heads: each combines per-modality features [B, d] and a presence mask [B, M] into
task outputs [B, k].

Every module of this package registers itself in :data:`FUSIONS` on import; modules are
imported automatically, so adding a head is adding one file (and its YAML in configs/fusion/).
"""

import importlib
import pkgutil

from fusion_models.registry import Registry

FUSIONS: Registry = Registry("fusion head")

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FUSIONS"]
