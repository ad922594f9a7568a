"""A site's samples as a torch Dataset: ``{"image": T, "tabular": T, ..., "present": bool[M],
"label": y}``, encoded with the run's :class:`~client.features.FeatureSpec`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from client.atomic_io import atomic_open
from client.features import FeatureSpec, encode_omics, encode_tabular
from client.file_reader import read_file_array
from client.manifest import Manifest
from client.schema import SPLITS

__all__ = ["SPLITS", "SiteDataset", "CACHE_ENV", "shared_cache_dir", "default_cache_dir", "load_site_dataset"]

#: Environment variable naming the shared cache of decoded files.
CACHE_ENV = "FEDFUSION_CACHE"
#: Bumped when the layout of a cache entry changes, so old entries are never read.
_CACHE_FORMAT = 2

class SiteDataset(Dataset):
    """In-memory samples of one split of one site.

    Args:
        inputs: modality -> tensor [N, ...] (zeros where the modality is missing).
        present: bool [N, M], in ``modalities`` order.
        target: labels [N] (survival: [N, 2] = time, event).
        sample_ids: the id of each row, unique within the site (a sample is (site, id)).
        modalities: modality order of ``present``.
    """

    def __init__(
        self,
        inputs: dict[str, torch.Tensor],
        present: torch.Tensor,
        target: torch.Tensor,
        sample_ids: list[str],
        modalities: list[str],
    ) -> None:
        self.inputs = inputs
        self.present = present
        self.target = target
        self.sample_ids = sample_ids
        self.modalities = modalities

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {m: self.inputs[m][index] for m in self.modalities}
        item["present"] = self.present[index]
        item["label"] = self.target[index]
        return item

    def presence_counts(self) -> dict[str, int]:
        """Samples that carry each modality (the server weights each module by these)."""
        return {m: int(self.present[:, i].sum()) for i, m in enumerate(self.modalities)}


def load_site_dataset(
    manifest: Manifest, spec: FeatureSpec, *, split: str, cache_dir: str | Path | None = None
) -> SiteDataset:
    """Encode the rows of ``split`` (see ``Manifest.split_mask``).

    Decoded files are cached under ``cache_dir`` (keyed by the files decoded, see
    ``_cache_path``), since a deployed site starts a fresh process for every round.
    """
    positions = np.flatnonzero(manifest.split_mask(split))
    rows = manifest.table.iloc[positions]
    inputs: dict[str, torch.Tensor] = {}
    present = []
    for modality in spec.modalities:
        if modality == "tabular":
            inputs[modality] = torch.from_numpy(encode_tabular(rows, spec))
            present.append(np.ones(len(rows), dtype=bool))
        elif modality == "omics":
            values, has = encode_omics(rows, spec)
            inputs[modality] = torch.from_numpy(values)
            present.append(has)
        else:
            values, has = _file_column(manifest, spec, modality, cache_dir)
            inputs[modality] = torch.from_numpy(values[positions])
            present.append(has[positions])
    target = _targets(manifest, rows, spec)
    return SiteDataset(
        inputs=inputs,
        present=torch.from_numpy(np.stack(present, axis=1)) if present else torch.zeros(len(rows), 0, dtype=torch.bool),
        target=target,
        sample_ids=rows[manifest.schema.id_column].astype(str).tolist(),
        modalities=list(spec.modalities),
    )


def _targets(manifest: Manifest, rows: pd.DataFrame, spec: FeatureSpec) -> torch.Tensor:
    schema = manifest.schema
    if spec.task == "survival":
        time = pd.to_numeric(rows[schema.time_column]).to_numpy(dtype=np.float32)
        event = pd.to_numeric(rows[schema.event_column]).to_numpy(dtype=np.float32)
        return torch.from_numpy(np.stack([time, event], axis=1))
    if spec.task == "regression":
        return torch.from_numpy(pd.to_numeric(rows[schema.label_column]).to_numpy(dtype=np.float32))
    index = {c: i for i, c in enumerate(spec.classes)}
    labels = rows[schema.label_column].astype(str)
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(
            f"{manifest.path}: labels {unknown} are not among the run's classes {spec.classes} "
            "(the classes come from every site's training split)"
        )
    codes = labels.map(index).to_numpy(dtype=np.int64)
    return torch.from_numpy(codes.astype(np.float32) if spec.task == "binary" else codes)


def _file_column(
    manifest: Manifest, spec: FeatureSpec, modality: str, cache_dir: str | Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """All rows of one file column decoded: (float32 [N, *shape], present bool [N])."""
    column = spec.files[modality]
    shape = spec.shapes[modality]
    cache = _cache_path(manifest, column, shape, cache_dir, modality)
    if cache is not None and cache.exists():
        with np.load(cache) as stored:
            return stored["values"], stored["present"]
    n = len(manifest.table)
    values = np.zeros((n, *shape), dtype=np.float32)
    present = np.zeros(n, dtype=bool)
    for i in range(n):
        path = manifest.file_path(column, i)
        if path is None:
            continue
        array = read_file_array(path, modality=modality)
        if list(array.shape) != list(shape):
            raise ValueError(
                f"{manifest.path}, row {i + 2}, column {column!r}: {modality} shape {list(array.shape)}, "
                f"expected {list(shape)} like the other sites"
            )
        values[i] = array
        present[i] = True
    if cache is not None:
        with atomic_open(cache, "wb") as f:
            np.savez(f, values=values, present=present)
    return values, present


def shared_cache_dir() -> Path:
    """The one cache of decoded files on this machine: ``$FEDFUSION_CACHE``, else
    ``$XDG_CACHE_HOME/fedfusion``, else ``~/.cache/fedfusion``. Clear it with
    ``fedfusion cache clear`` (or delete the folder); it refills on the next run."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fedfusion"


def default_cache_dir(manifest: Manifest | None = None) -> Path:
    """Where decoded files are cached unless a node's ``cache-dir`` says otherwise: the shared
    cache (:func:`shared_cache_dir`). Entries are keyed by the files they decode, not by the
    manifest, so every run over the same files reuses them; ``manifest`` no longer changes the
    location (it was a folder beside the manifest, ~118 MB per HAM10000 run)."""
    return shared_cache_dir()


def _file_stamp(path: Path | None) -> str:
    if path is None:
        return ""
    absolute = os.path.abspath(path)
    try:
        stat = os.stat(absolute)
    except OSError:
        return f"{absolute}|missing"
    return f"{absolute}|{stat.st_size}|{stat.st_mtime_ns}"


def _cache_path(
    manifest: Manifest, column: str, shape: list[int], cache_dir: str | Path | None, modality: str
) -> Path | None:
    """The entry for one file column: keyed by every row's file (absolute path, size and
    modification time, in row order), the modality and the shape, so two manifests that name
    the same files in the same order share it, and a changed file makes a new key."""
    if cache_dir is None:
        return None
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{modality}|{list(shape)}".encode())
    for i in range(len(manifest.table)):
        digest.update(b"\n" + _file_stamp(manifest.file_path(column, i)).encode())
    return Path(cache_dir) / f"{modality}-{digest.hexdigest()[:24]}.npz"
