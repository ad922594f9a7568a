"""A site's samples as a torch Dataset: ``{"image": T, "tabular": T, ..., "present": bool[M],
"label": y}``, encoded with the run's :class:`~client.features.FeatureSpec`."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from client.features import FeatureSpec, encode_omics, encode_tabular
from client.manifest import Manifest
from client.schema import SPLITS

__all__ = [
    "SERIES_HOURS",
    "SERIES_STEPS",
    "SPLITS",
    "SiteDataset",
    "default_cache_dir",
    "load_site_dataset",
    "read_file_array",
]

_EIGHT_BIT = (".png", ".jpg", ".jpeg")


#: Time steps T of every series sample: a series is the first ``SERIES_STEPS`` observation
#: rows in time order, zero-padded (mask 0, time 0) when shorter. 128 was measured on the
#: eICU demo's first 48 h (cuff blood pressure every ~15 min plus respiratory and urine
#: charting): the stays have a median of 52 and a 90th percentile of 144 distinct
#: observation times, so 128 keeps 87% of the stays whole and 90% of all rows, while the
#: truncated 13% (the most densely monitored) keep their first ~35 hours.
SERIES_STEPS = 128
#: Hours that map to time 1.0 in the time channel (the eICU series cover the first 48 h).
SERIES_HOURS = 48.0


def read_file_array(path: Path, *, modality: str, length: int = SERIES_STEPS) -> np.ndarray:
    """Read one image or one series file as float32, channels first.

    Images: MONAI ``LoadImage`` (PNG/JPEG/NIfTI/.npy); 8-bit images are scaled to [0, 1],
    others z-scored per volume.

    Series: ``[2 * C + 1, length]`` = C value channels (0 where not measured), C observation
    masks (1 = measured) and one time channel, from

    - a CSV with an ``hours`` column (time since the series start, irregular) and one column
      per variable, an empty cell meaning "not measured then": the rows are sorted by
      ``hours`` and the first ``length`` kept; time = hours / ``SERIES_HOURS``;
    - a CSV without ``hours``, or a ``.npy`` shaped [T, C]: one row per regular step; a
      ``.npy`` is fully observed (NaN cells count as not measured); time = step / T.

    Steps beyond the file's rows are padding: values, masks and time all 0.

    Args:
        path: the file.
        modality: ``"image"`` or ``"series"``.
        length: series steps T (the run's ``SERIES_STEPS``); ignored for images.
    """
    if modality == "image":
        from monai.transforms import LoadImage

        array = np.asarray(LoadImage(image_only=True, ensure_channel_first=True)(str(path)), dtype=np.float32)
        if str(path).lower().endswith(_EIGHT_BIT):
            return array / 255.0
        # Non-8-bit sources (CT, MRI) have no fixed range: z-score each volume.
        return (array - array.mean()) / (array.std() + 1e-6)
    if modality != "series":
        raise ValueError(f"{path}: cannot read modality {modality!r} from a file; expected 'image' or 'series'")
    if length < 1:
        raise ValueError(f"series length must be a positive number of steps, got {length}")
    values, hours = _series_rows(Path(path))
    steps = values.shape[0]
    if hours is None:
        times = np.arange(steps, dtype=np.float64) / max(steps, 1)
    else:
        order = np.argsort(hours, kind="stable")  # irregular rows, kept in time order
        values, times = values[order], hours[order] / SERIES_HOURS
    kept = min(steps, length)
    channels = values.shape[1]
    out = np.zeros((2 * channels + 1, length), dtype=np.float32)
    observed = np.isfinite(values[:kept])  # [kept, C]
    out[:channels, :kept] = np.where(observed, values[:kept], 0.0).T
    out[channels : 2 * channels, :kept] = observed.T
    out[2 * channels, :kept] = times[:kept]
    return out


def _series_rows(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(values float64 [rows, C] with NaN = not measured, hours [rows] or None) of one file."""
    if not path.name.lower().endswith(".csv"):
        series = np.load(path, allow_pickle=False).astype(np.float64)
        if series.ndim != 2:
            raise ValueError(f"{path}: a .npy series must be shaped [T, C], found {list(series.shape)}")
        return series, None
    frame = pd.read_csv(path)
    numbers = frame.apply(pd.to_numeric, errors="coerce")
    bad = frame.notna() & numbers.isna()
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise ValueError(
            f"{path}, row {row + 2}, column {frame.columns[col]!r}: {frame.iat[row, col]!r} is not a number "
            "(a series cell is a number, or empty when not measured)"
        )
    if "hours" not in numbers.columns:
        return numbers.to_numpy(dtype=np.float64), None
    hours = numbers.pop("hours").to_numpy(dtype=np.float64)
    if not np.isfinite(hours).all():
        row = int(np.flatnonzero(~np.isfinite(hours))[0])
        raise ValueError(f"{path}, row {row + 2}, column 'hours': every row needs a time")
    return numbers.to_numpy(dtype=np.float64), hours


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

    Decoded files are cached under ``cache_dir`` (keyed by the manifest's path, size and
    modification time), since a deployed site starts a fresh process for every round.
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
    cache = _cache_path(manifest, column, shape, cache_dir)
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
        cache.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz")
        with os.fdopen(handle, "wb") as f:
            np.savez(f, values=values, present=present)
        os.replace(tmp, cache)
    return values, present


def default_cache_dir(manifest: Manifest) -> Path:
    """Where decoded files of a site are cached unless its node config says otherwise."""
    return manifest.path.parent / ".fedfusion-cache"


def _cache_path(manifest: Manifest, column: str, shape: list[int], cache_dir: str | Path | None) -> Path | None:
    if cache_dir is None:
        return None
    stat = manifest.path.stat()
    key = f"{manifest.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{column}|{shape}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{manifest.site}-{column}-{digest}.npz"
