"""HyperFusion: the image encoder's weights are generated from the tabular record by a
hypernetwork, then the modality features are concatenated."""

from __future__ import annotations

from fusion_models.fusion import FUSIONS
from fusion_models.fusion.concat import ConcatFusion

__all__ = ["HyperFusion"]


@FUSIONS.register("hyperfusion")
class HyperFusion(ConcatFusion):
    """Concatenation fusion whose image features come from the hypernetwork-conditioned CNN.

    The fusion happens in the encoder: ``configs/fusion/hyperfusion.yaml`` carries
    ``encoders: {image: {name: cnn_hyper, conditioned_on: tabular, hyper_layers: [project]}}``,
    which ``server/model_setup.py`` swaps in for the image encoder (see
    :class:`fusion_models.encoders.image_hyper.HyperCNN`; ``hyper_layers: [project,
    last_conv]`` also conditions the last conv block). The head itself is
    :class:`ConcatFusion`: features of every modality (zeros where missing) plus the presence
    mask, then an MLP.

    Opacus: as :class:`ConcatFusion` (``nn.Linear`` only): ``hooks``, ``functorch`` and
    ``ew`` modes work.

    Args:
        modalities: modality names, in the order of the presence mask.
        feature_dim: d, the width of each modality's features.
        out_dim: task output width.
        hidden: hidden width of the head.
        dropout: dropout before the output layer.

    References:
        Duenias, Nichyporuk, Arbel, Riklin Raviv. "HyperFusion: A Hypernetwork Approach to
        Multimodal Integration of Tabular and Medical Imaging Data for Predictive Modeling."
        arXiv:2403.13319, 2024. https://arxiv.org/abs/2403.13319
    """
