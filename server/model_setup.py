"""Turn the run's feature spec and model settings into the one ModelSpec every party builds."""

from __future__ import annotations

import inspect
from typing import Any

from client.features import FeatureSpec
from fusion_models.fusion import FUSIONS
from fusion_models.model import ModelSpec
from fusion_models.task import make_task
from server.settings import ModelSettings

__all__ = ["make_model_spec", "DEFAULT_ENCODERS"]

DEFAULT_ENCODERS = {"image": "cnn_small", "tabular": "mlp", "series": "conv1d", "omics": "omics_mlp"}


def _inputs(modality: str, features: FeatureSpec) -> dict[str, Any]:
    if modality == "image":
        shape = features.shapes["image"]
        return {"in_channels": shape[0], "spatial_dims": len(shape) - 1}
    if modality == "series":
        return {"in_channels": features.shapes["series"][0]}
    if modality == "tabular":
        # The encoded vector's columns in order (client/features.py::encode_tabular), as JSON
        # lists because the ModelSpec travels as JSON: [name, kind, width].
        layout = [[name, "numeric", 2] for name in features.numeric]
        layout += [[name, "categorical", len(vocabulary) + 1] for name, vocabulary in features.categorical.items()]
        return {"in_features": features.tabular_width, "layout": layout}
    return {"in_features": len(features.omics)}


def make_model_spec(features: FeatureSpec, settings: ModelSettings) -> ModelSpec:
    """Model spec for ``features.modalities`` with the configured (or default) encoders.

    A fusion config may carry ``encoders: {modality: {...}}``: early-fusion methods (FiLM,
    HyperFusion) replace the image encoder with one conditioned on another modality, which
    then gets ``condition_features`` (that modality's input width) as an argument.
    """
    fusion = dict(settings.fusion)
    overrides = fusion.pop("encoders", None) or {}
    inputs = {m: _inputs(m, features) for m in features.modalities}
    encoders = {}
    for modality in features.modalities:
        options = dict(overrides.get(modality) or settings.encoders.get(modality) or {})
        options.setdefault("name", DEFAULT_ENCODERS[modality])
        condition = options.get("conditioned_on")
        if condition is not None:
            if condition not in inputs:
                raise ValueError(
                    f"encoder {options['name']!r} of {modality} is conditioned on {condition!r}, "
                    f"which this data lacks (modalities: {features.modalities})"
                )
            options["condition_features"] = inputs[condition]["in_features"]
        encoders[modality] = options
    task = make_task(features.task, num_classes=max(2, len(features.classes)))
    # Heads that depend on the task (mm_dynamics' true-class-probability needs classes) get
    # it, so a wrong combination fails when the model is built, not at the first loss.
    if "task" in inspect.signature(FUSIONS.get(fusion["name"])).parameters:
        fusion.setdefault("task", features.task)
    return ModelSpec(
        modalities=inputs,
        encoders=encoders,
        fusion=fusion,
        feature_dim=settings.feature_dim,
        out_dim=task.output_dim,
        modality_dropout=settings.modality_dropout,
    )
