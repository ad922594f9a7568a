"""Modality encoders: each maps one modality's batch to features of shape [B, d]."""

from fusion_models.registry import Registry

ENCODERS: Registry = Registry("encoder")

# Import the modules so that they register themselves.
from fusion_models.encoders import image_cnn, omics_mlp, series_conv1d, tabular_mlp  # noqa: E402,F401

__all__ = ["ENCODERS"]
