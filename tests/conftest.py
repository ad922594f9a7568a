"""Shared fixtures: a private Flower home with telemetry off, and small manifests on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def flower_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs with a temporary FLWR_HOME, Flower telemetry off, and a cache of decoded
    files of its own (never the user's ~/.cache/fedfusion)."""
    home = tmp_path_factory.mktemp("flwr_home")
    monkeypatch.setenv("FLWR_HOME", str(home))
    monkeypatch.setenv("FEDFUSION_CACHE", str(tmp_path_factory.mktemp("fedfusion_cache")))
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("RAY_DISABLE_USAGE_STATS", "1")
    return home


def write_image_sites(
    folder: Path, *, sites: dict[str, int], seed: int = 0, missing_image_every: int = 0, size: int = 8
) -> list[Path]:
    """Hand-written manifests: RGB PNGs whose brightness carries the label, plus age/sex.

    Args:
        folder: where the CSVs and an ``images/`` folder are written.
        sites: site name -> number of samples.
        seed: seed of the generated values.
        missing_image_every: leave the image cell empty on every k-th row (0 = never).
        size: image side in pixels.
    """
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for site, n in sites.items():
        rows = []
        for i in range(n):
            label = int(rng.random() < 0.4)
            pixels = rng.normal(100 + 60 * label, 30, size=(size, size, 3)).clip(0, 255).astype(np.uint8)
            name = f"images/{site}_{i}.png"
            Image.fromarray(pixels, mode="RGB").save(folder / name)
            image = "" if missing_image_every and i % missing_image_every == 0 else name
            age = "" if i % 7 == 0 else f"{rng.normal(50 + 10 * label, 10):.1f}"
            sex = ["female", "male"][int(rng.random() < 0.5)]
            rows.append({"sample_id": f"{site}-{i}", "label": ["benign", "malignant"][label], "age": age, "sex": sex, "image": image})
        path = folder / f"{site}.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
        paths.append(path)
    return paths


@pytest.fixture
def image_sites(tmp_path: Path) -> Path:
    """A folder with two small image + tabular sites."""
    folder = tmp_path / "sites"
    write_image_sites(folder, sites={"alpha": 40, "beta": 30}, missing_image_every=5)
    return folder


@pytest.fixture
def task_identity():
    """What Flower's runtime sets before an app runs; needed to build Messages in a test."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    try:
        yield TaskIdentity
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
