"""The strategy registry: name -> class, one name per ``configs/strategy/<name>.yaml``."""

from __future__ import annotations

from fusion_models.registry import Registry

__all__ = ["STRATEGIES"]

#: Strategy name -> :class:`~server.strategies.base.ModalityAwareStrategy` subclass.
STRATEGIES: Registry = Registry("strategy")
