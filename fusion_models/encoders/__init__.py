"""Modality encoders: each maps one modality's batch to features of shape [B, d].

Every module of this package registers itself in :data:`ENCODERS` on import; modules are
imported automatically, so adding an encoder is adding one file.
"""

import importlib
import pkgutil

from fusion_models.registry import Registry

ENCODERS: Registry = Registry("encoder")

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ENCODERS"]
