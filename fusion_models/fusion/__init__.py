"""Fusion heads: each combines per-modality features [B, d] and a presence mask [B, M] into
task outputs [B, k]."""

from fusion_models.registry import Registry

FUSIONS: Registry = Registry("fusion head")

from fusion_models.fusion import concat  # noqa: E402,F401

__all__ = ["FUSIONS"]
