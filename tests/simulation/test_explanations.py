import numpy as np
import torch
from PIL import Image
from torch import nn

from client.data import SiteDataset
from client.train import make_loader
from fusion_models.fusion import FUSIONS
from fusion_models.model import ModelSpec, build_model
from simulation.explanations import collect_explanations, plot_explanations


class _GatedHead(nn.Module):
    def __init__(self, modalities, feature_dim, out_dim):
        super().__init__()
        self.gate = nn.Linear(feature_dim * len(modalities), len(modalities))
        self.out = nn.Linear(feature_dim, out_dim)

    def forward(self, features, present):
        stacked = torch.stack([features[m] for m in features], dim=1)  # [B, M, d]
        logits = self.gate(stacked.flatten(1)).masked_fill(~present, -1e9)
        weights = logits.softmax(dim=1)  # [B, M]
        self.last_explanations = {"gate": weights.detach(), "pair": (weights[:, :, None] * weights[:, None, :]).detach()}
        return self.out((weights[:, :, None] * stacked).sum(dim=1))


def _dataset(n, seed):
    g = torch.Generator().manual_seed(seed)
    present = torch.ones(n, 2, dtype=torch.bool)
    present[: n // 2, 0] = False  # half the samples lack the image
    return SiteDataset({"image": torch.randn(n, 3, 8, 8, generator=g), "tabular": torch.randn(n, 4, generator=g)},
                       present, torch.zeros(n), [str(i) for i in range(n)], ["image", "tabular"])  # fmt: skip


def test_explanations_are_averaged_per_site_and_plotted(tmp_path):
    FUSIONS.register("test_gated")(_GatedHead)
    try:
        spec = ModelSpec(modalities={"image": {"in_channels": 3, "spatial_dims": 2}, "tabular": {"in_features": 4}},
                         encoders={"image": {"name": "cnn_small"}, "tabular": {"name": "mlp"}},
                         fusion={"name": "test_gated"}, feature_dim=8, out_dim=1)  # fmt: skip
        model = build_model(spec, seed=0)
        site_a = _dataset(10, 0)
        found = collect_explanations(model, {"a": site_a, "b": _dataset(6, 1)}, device=torch.device("cpu"))
        # the per-sample gates of site a, read straight off the head
        model.eval()
        with torch.no_grad():
            model(next(iter(make_loader(site_a, batch_size=10, shuffle=False, seed=0))))
        weights = model.fusion.last_explanations["gate"]
    finally:
        FUSIONS.unregister("test_gated")
    assert set(found) == {"fusion.gate", "fusion.pair"}
    gate = found["fusion.gate"]
    assert gate["shape"] == [2] and gate["n"] == {"a": 10, "b": 6}
    np.testing.assert_allclose(np.sum(gate["per_site"]["a"]), 1.0, rtol=1e-5)
    assert float(weights[:5, 0].max()) == 0.0  # the absent image of half the samples gets no weight
    np.testing.assert_allclose(gate["per_site"]["a"], weights.mean(dim=0).numpy(), rtol=1e-5)
    path = plot_explanations(found, ["image", "tabular"], tmp_path)
    assert Image.open(path).size[0] > 200


def test_nothing_to_explain_writes_no_figure(tmp_path):
    assert plot_explanations({}, ["image"], tmp_path) is None
