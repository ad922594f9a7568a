"""A seeded multimodal generator for tests and controlled experiments.

Every sample has a latent score ``z``; the binary label is ``z > 0``. Each modality ``m``
sees its own noisy view ``v_m = signal[m] * z + N(0, 1)``, so a model can learn from any one
modality alone (better with a larger signal) and more from all of them together, because
the views' noises are independent. Natural sites shift both ``z`` (so prevalence differs)
and each modality's features (covariate shift: image tint, tabular offsets, omics batch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from client.schema import Schema
from simulation.datasets.base import DATASETS, SampleTable

__all__ = ["load", "MODALITIES", "CATEGORY_LEVELS"]

MODALITIES = ("image", "tabular", "omics", "series")
CATEGORY_LEVELS = ["low", "mid", "high"]
_NUMERIC = ["num_0", "num_1", "num_2"]
_TABULAR_MISSING = 0.05  # fraction of tabular cells left empty, so imputation is exercised


def _image(view: float, tint: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A [size, size, 3] uint8 image: a centred blob whose colour follows ``view``."""
    axis = (np.arange(size) - (size - 1) / 2 + rng.normal(0, size / 16, 2)[:, None]) / (size / 4)
    blob = np.exp(-(axis[0][:, None] ** 2 + axis[1][None, :] ** 2))  # [H, W]
    colour = np.array([0.2, 0.0, -0.2]) * view  # red up, blue down with the view
    pixels = 0.5 + tint[None, None, :] + blob[:, :, None] * colour[None, None, :]
    pixels = pixels + rng.normal(0, 0.04, pixels.shape)
    return (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)


def _series(view: float, length: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """A [length, channels] float32 series: oscillations plus a trend that follows ``view``."""
    t = np.linspace(0, 1, length)[:, None]  # [T, 1]
    trend = np.array([(-0.5) ** c for c in range(channels)])[None, :]  # [1, C]
    phase = rng.uniform(0, 2 * np.pi, (1, channels))
    x = np.sin(2 * np.pi * 3 * t + phase) + 1.5 * view * trend * t + rng.normal(0, 0.3, (length, channels))
    return x.astype(np.float32)


def _per_modality(values: dict[str, float], modalities: list[str], name: str) -> dict[str, float]:
    unknown = sorted(set(values) - set(modalities))
    if unknown:
        raise ValueError(f"dataset 'synthetic': {name} names modalities not generated: {unknown}; generated: {modalities}")
    return {m: float(values.get(m, 0.0 if name == "missing" else 1.0)) for m in modalities}


@DATASETS.register("synthetic")
def load(
    *,
    root: str | Path | None = None,
    task: str | None = None,
    n_samples: int = 600,
    modalities: list[str] | tuple[str, ...] = ("image", "tabular", "omics"),
    signal: dict[str, float] | None = None,
    missing: dict[str, float] | None = None,
    image_size: int = 16,
    series_length: int = 24,
    series_channels: int = 3,
    n_omics: int = 32,
    n_natural_sites: int = 0,
    seed: int = 0,
) -> SampleTable:
    """Generate a binary multimodal sample table, writing image/series files under ``root``.

    Args:
        root: folder for the generated files (``images/*.png``, ``series/*.npy``); required
            when ``modalities`` has image or series.
        task: only ``"binary"`` (the default).
        n_samples: number of rows.
        modalities: any of image, tabular, omics, series.
        signal: modality -> signal strength (default 1.0 each; 0 = that modality is noise).
        missing: modality -> fraction of samples without it (default 0). A sample never
            loses every modality.
        image_size: side of the square RGB images.
        series_length: time steps T of each series (saved as float32 [T, C]).
        series_channels: channels C of each series.
        n_omics: number of inline omics columns (a quarter of them carry the signal).
        n_natural_sites: 0 for none, else a ``site`` column with shifted distributions.
        seed: the generator seed; the same seed gives the same table and files.

    Returns:
        The sample table (classes ``["negative", "positive"]``).
    """
    if task not in (None, "binary"):
        raise ValueError(f"dataset 'synthetic' has only the 'binary' task, got {task!r}")
    modalities = list(modalities)
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown or not modalities:
        raise ValueError(f"dataset 'synthetic': unknown modalities {unknown or modalities}; choose from {list(MODALITIES)}")
    if n_samples < 1:
        raise ValueError(f"dataset 'synthetic': n_samples must be >= 1, got {n_samples}")
    signal = _per_modality(signal or {}, modalities, "signal")
    missing = _per_modality(missing or {}, modalities, "missing")
    for m, f in missing.items():
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"dataset 'synthetic': missing[{m!r}] must be in [0, 1], got {f}")
    needs_files = {"image", "series"} & set(modalities)
    if needs_files and root is None:
        raise ValueError(f"dataset 'synthetic': root= is required to write the {sorted(needs_files)} files")

    rng = np.random.default_rng(seed)
    n = n_samples
    site = rng.integers(0, n_natural_sites, n) if n_natural_sites > 0 else np.zeros(n, dtype=int)
    n_shift = max(n_natural_sites, 1)
    z_shift = rng.normal(0, 0.5, n_shift) if n_natural_sites > 0 else np.zeros(1)
    z = rng.normal(0, 1, n) + z_shift[site]
    views = {m: signal[m] * z + rng.normal(0, 1, n) for m in modalities}

    # Which samples lack each modality; a sample that lost all of them gets one back.
    absent = {m: rng.random(n) < missing[m] for m in modalities}
    stack = np.stack([absent[m] for m in modalities], axis=1)  # [N, M]
    for i in np.flatnonzero(stack.all(axis=1)):
        absent[modalities[rng.integers(len(modalities))]][i] = False

    width = max(5, len(str(n - 1)))
    ids = [f"synth_{i:0{width}d}" for i in range(n)]
    table = pd.DataFrame({"sample_id": ids, "label": np.where(z > 0, "positive", "negative")})
    columns: dict[str, str] = {"sample_id": "id", "label": "label"}
    categories: dict[str, list[str]] = {}
    shapes: dict[str, list[int]] = {}
    if n_natural_sites > 0:
        table["site"] = [f"site_{s}" for s in site]
        columns["site"] = "ignore"

    if "tabular" in modalities:
        v = views["tabular"]
        offset = rng.normal(0, 0.5, (n_shift, 3)) if n_natural_sites > 0 else np.zeros((1, 3))
        numeric = np.stack([
            50 + 10 * (v + 0.3 * rng.normal(0, 1, n)),  # an age-like scale, so normalisation matters
            0.5 * v + rng.normal(0, 1, n),
            rng.normal(0, 1, n),  # pure noise
        ], axis=1) + offset[site]
        numeric[rng.random(numeric.shape) < _TABULAR_MISSING] = np.nan
        numeric[absent["tabular"]] = np.nan
        for j, c in enumerate(_NUMERIC):
            table[c] = numeric[:, j]
            columns[c] = "numeric"
        level = np.digitize(v + 0.5 * rng.normal(0, 1, n), [-0.7, 0.7])
        cat = np.array(CATEGORY_LEVELS, dtype=object)[level]
        cat[(rng.random(n) < _TABULAR_MISSING) | absent["tabular"]] = None
        table["cat_0"] = pd.Series(cat, dtype=object)
        columns["cat_0"] = "categorical"
        categories["cat_0"] = list(CATEGORY_LEVELS)

    if "omics" in modalities:
        k = max(1, n_omics // 4)
        loading = np.zeros(n_omics)
        # Each informative gene carries the view scaled by ~1/sqrt(k) plus N(0, 0.5) noise, so
        # the best linear read-out of all of them recovers the view with noise variance ~0.25.
        loading[:k] = rng.choice([-1.0, 1.0], k) * rng.uniform(0.7, 1.3, k) / np.sqrt(k)
        base = rng.normal(8, 2, n_omics)
        batch = rng.normal(0, 0.5, (n_shift, n_omics)) if n_natural_sites > 0 else np.zeros((1, n_omics))
        expr = base + batch[site] + views["omics"][:, None] * loading[None, :] + rng.normal(0, 0.5, (n, n_omics))
        expr[absent["omics"]] = np.nan
        for j in range(n_omics):
            c = f"gene_{j:03d}"
            table[c] = expr[:, j]
            columns[c] = "omics"

    if "image" in modalities:
        folder = Path(root).expanduser().resolve() / "images"
        folder.mkdir(parents=True, exist_ok=True)
        tint = rng.normal(0, 0.08, (n_shift, 3)) if n_natural_sites > 0 else np.zeros((1, 3))
        paths: list[str | None] = []
        for i in range(n):
            pixels = _image(views["image"][i], tint[site[i]], image_size, rng)
            if absent["image"][i]:
                paths.append(None)
                continue
            path = folder / f"{ids[i]}.png"
            Image.fromarray(pixels, mode="RGB").save(path)
            paths.append(str(path))
        table["image"] = pd.Series(paths, dtype=object)
        columns["image"] = "image"
        shapes["image"] = [3, image_size, image_size]

    if "series" in modalities:
        folder = Path(root).expanduser().resolve() / "series"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(n):
            x = _series(views["series"][i], series_length, series_channels, rng)
            if absent["series"][i]:
                paths.append(None)
                continue
            path = folder / f"{ids[i]}.npy"
            np.save(path, x)
            paths.append(str(path))
        table["series"] = pd.Series(paths, dtype=object)
        columns["series"] = "series"
        # Schema.shapes is for image columns only; each .npy file carries its [T, C] shape.

    return SampleTable(
        name="synthetic",
        table=table,
        schema=Schema(columns=columns, task="binary", classes=["negative", "positive"],
                      categories=categories, shapes=shapes),
        site_column="site" if n_natural_sites > 0 else None,
        description=f"synthetic binary ({n} samples; {', '.join(modalities)}; seed {seed})",
    )
