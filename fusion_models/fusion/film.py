"""Early fusion by FiLM: the image encoder is modulated by the tabular record, then the
modality features are concatenated."""

from __future__ import annotations

from fusion_models.fusion import FUSIONS
from fusion_models.fusion.concat import ConcatFusion

__all__ = ["FiLMFusion"]


@FUSIONS.register("film")
class FiLMFusion(ConcatFusion):
    """Concatenation fusion whose image features come from the FiLM-conditioned CNN.

    The early fusion happens in the encoder: ``configs/fusion/film.yaml`` carries
    ``encoders: {image: {name: cnn_film, conditioned_on: tabular}}``, which
    ``server/model_setup.py`` swaps in for the image encoder (see
    :class:`fusion_models.encoders.image_film.FiLMCNN`). The head itself is
    :class:`ConcatFusion`: features of every modality (zeros where missing) plus the presence
    mask, then an MLP, so the tabular record also reaches the head directly.

    Opacus: as :class:`ConcatFusion` (``nn.Linear`` only): ``hooks``, ``functorch`` and
    ``ew`` modes work.

    Args:
        modalities: modality names, in the order of the presence mask.
        feature_dim: d, the width of each modality's features.
        out_dim: task output width.
        hidden: hidden width of the head.
        dropout: dropout before the output layer.

    References:
        Perez, Strub, de Vries, Dumoulin, Courville. "FiLM: Visual Reasoning with a General
        Conditioning Layer." AAAI 2018. https://arxiv.org/abs/1709.07871
    """
