"""What the fusion methods use to explain a prediction (attention weights, gates, modality
weights, hypernetwork outputs), collected per test sample, summarised per site and plotted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from client.data import SiteDataset  # noqa: E402
from client.train import make_loader  # noqa: E402
from fusion_models.model import MultimodalModel  # noqa: E402
from simulation.plots import save_figure  # noqa: E402

__all__ = ["collect_explanations", "plot_explanations"]

_TOP = 12  # dimensions shown for long vectors (feature gates, feature attention)


@torch.no_grad()
def collect_explanations(
    model: MultimodalModel, tests: dict[str, SiteDataset], *, device: torch.device
) -> dict[str, dict[str, Any]]:
    """Mean over each site's test samples of every explanation the model returns.

    Returns ``{key: {"shape": [...], "per_site": {site: nested list}, "n": {site: count}}}``;
    empty when the model explains nothing (e.g. plain concatenation).
    """
    model.to(device).eval()
    sums: dict[str, dict[str, np.ndarray]] = {}
    counts: dict[str, dict[str, int]] = {}
    for site, dataset in tests.items():
        for batch in make_loader(dataset, batch_size=256, shuffle=False, seed=0):
            model({k: v.to(device) for k, v in batch.items()})
            for key, value in model.explanations().items():
                array = value.detach().float().cpu().numpy()
                finite = np.nan_to_num(array, nan=0.0)
                sums.setdefault(key, {}).setdefault(site, np.zeros(array.shape[1:]))
                sums[key][site] = sums[key][site] + finite.sum(axis=0)
                counts.setdefault(key, {}).setdefault(site, 0)
                counts[key][site] += array.shape[0]
    out = {}
    for key, by_site in sums.items():
        per_site = {site: (total / max(counts[key][site], 1)).tolist() for site, total in by_site.items()}
        shape = list(next(iter(by_site.values())).shape)
        out[key] = {"shape": shape, "per_site": per_site, "n": counts[key]}
    return out


def plot_explanations(explanations: dict[str, dict[str, Any]], modalities: list[str], out_dir: Path) -> Path | None:
    """One panel per explanation: per-site bars over modalities, a heatmap for
    modality-by-modality attention, or the top dimensions of long vectors."""
    if not explanations:
        return None
    keys = list(explanations)[:6]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        entry = explanations[key]
        sites = list(entry["per_site"])
        values = np.array([entry["per_site"][s] for s in sites], dtype=float)  # [sites, *shape]
        shape = entry["shape"]
        if len(shape) == 0:
            ax.bar(sites, values)
            ax.set_ylabel("mean over test samples")
        elif len(shape) == 1:
            labels = modalities if shape[0] == len(modalities) else None
            if labels is None:
                top = np.argsort(-np.abs(values).mean(axis=0))[:_TOP]
                values, labels = values[:, top], [str(i) for i in top]
            width = 0.8 / len(sites)
            for i, site in enumerate(sites):
                ax.bar(np.arange(len(labels)) + i * width, values[i], width=width, label=site)
            ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=30, ha="right")
            ax.legend(fontsize=7)
        else:
            matrix = values.mean(axis=0).reshape(shape[0], -1)
            image = ax.imshow(matrix, cmap="viridis", aspect="auto")
            if shape[0] == len(modalities) and matrix.shape[1] == len(modalities):
                ax.set_xticks(range(len(modalities)), modalities)
                ax.set_yticks(range(len(modalities)), modalities)
                ax.set_xlabel("attends to (key)")
                ax.set_ylabel("query")
            fig.colorbar(image, ax=ax)
        ax.set_title(key, fontsize=9)
    fig.suptitle("explanations of the federated model, mean over each site's test samples")
    fig.tight_layout()
    return save_figure(fig, Path(out_dir) / "explanations.png")
