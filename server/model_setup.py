"""Turn the run's feature spec and model settings into the one ModelSpec every party builds."""

from __future__ import annotations

from client.features import FeatureSpec
from fusion_models.model import ModelSpec
from fusion_models.task import make_task
from server.settings import ModelSettings

__all__ = ["make_model_spec", "DEFAULT_ENCODERS"]

DEFAULT_ENCODERS = {"image": "cnn_small", "tabular": "mlp", "series": "conv1d", "omics": "omics_mlp"}


def _inputs(modality: str, features: FeatureSpec) -> dict[str, int]:
    if modality == "image":
        shape = features.shapes["image"]
        return {"in_channels": shape[0], "spatial_dims": len(shape) - 1}
    if modality == "series":
        return {"in_channels": features.shapes["series"][0]}
    if modality == "tabular":
        return {"in_features": features.tabular_width}
    return {"in_features": len(features.omics)}


def make_model_spec(features: FeatureSpec, settings: ModelSettings) -> ModelSpec:
    """Model spec for ``features.modalities`` with the configured (or default) encoders."""
    encoders = {}
    for modality in features.modalities:
        options = dict(settings.encoders.get(modality) or {})
        options.setdefault("name", DEFAULT_ENCODERS[modality])
        encoders[modality] = options
    task = make_task(features.task, num_classes=max(2, len(features.classes)))
    return ModelSpec(
        modalities={m: _inputs(m, features) for m in features.modalities},
        encoders=encoders,
        fusion=dict(settings.fusion),
        feature_dim=settings.feature_dim,
        out_dim=task.output_dim,
        modality_dropout=settings.modality_dropout,
    )
