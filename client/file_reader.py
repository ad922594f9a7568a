"""Reading one image or series file into a float32 array, channels first: the one reader
the feature statistics (shapes) and the site datasets share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["SERIES_HOURS", "SERIES_STEPS", "read_file_array"]

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
