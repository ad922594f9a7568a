"""Feature statistics and encoding that every site shares.

No site ever sees another site's rows: each site reports counts and sums of its training
split (:func:`site_statistics`), the server merges them (:func:`merge_statistics`) into one
:class:`FeatureSpec`, and every site encodes its columns with that spec
(:func:`encode_tabular`, :func:`encode_omics`). Vocabularies fixed in the schema win over
the observed ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from client.file_reader import read_file_array
from client.manifest import Manifest
from client.role_inference import sort_classes
from client.schema import Schema

__all__ = ["FeatureSpec", "site_statistics", "merge_statistics", "encode_tabular", "encode_omics", "StatisticsError"]

_SPEC_VERSION = 1


class StatisticsError(ValueError):
    """The sites' statistics cannot be merged into one feature spec (names the problem)."""


@dataclass
class FeatureSpec:
    """How every site encodes its samples; built once per run from federated statistics.

    Args:
        task: binary, multiclass, regression or survival.
        classes: label vocabulary (index = class id) for classification tasks.
        numeric: tabular numeric column -> (mean, std).
        categorical: tabular categorical column -> vocabulary.
        omics: omics column -> (mean, std), in vector order.
        files: modality -> manifest column holding its file paths (image, series).
        shapes: modality -> array shape of one sample, channels first.
        modalities: modalities in presence-mask order.
    """

    task: str
    classes: list[str]
    numeric: dict[str, tuple[float, float]]
    categorical: dict[str, list[str]]
    omics: dict[str, tuple[float, float]]
    files: dict[str, str]
    shapes: dict[str, list[int]]
    modalities: list[str]
    spec_version: int = field(default=_SPEC_VERSION)

    @property
    def tabular_width(self) -> int:
        """Width of the encoded tabular vector: value + missing flag per numeric column,
        one-hot + missing flag per categorical column."""
        return 2 * len(self.numeric) + sum(len(v) + 1 for v in self.categorical.values())

    def to_json(self) -> str:
        # Column order is the encoding order: never sort the keys, or a site decoding the JSON
        # would lay out its tabular vector differently from the server's model spec.
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "FeatureSpec":
        data = json.loads(text)
        if data.get("spec_version") != _SPEC_VERSION:
            raise StatisticsError(f"feature spec version {data.get('spec_version')} is not {_SPEC_VERSION}")
        data["numeric"] = {k: tuple(v) for k, v in data["numeric"].items()}
        data["omics"] = {k: tuple(v) for k, v in data["omics"].items()}
        return cls(**data)


def _numeric(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)


def _moments(values: np.ndarray) -> list[float]:
    finite = values[np.isfinite(values)]
    return [float(finite.size), float(finite.sum()), float(np.square(finite).sum())]


def site_statistics(manifest: Manifest, *, split: str = "train") -> dict[str, Any]:
    """Counts and sums of one site's ``split`` rows: all that leaves the site for preprocessing.

    Returns a JSON-serialisable dict: ``n``; ``numeric``/``omics`` column -> [count, sum,
    sum of squares]; ``categorical`` column -> {value: count}; ``labels`` -> {label: count}
    (classification); ``present`` modality -> count; ``shapes`` modality -> shape.
    """
    schema = manifest.schema
    rows = _rows_of_split(manifest, split)
    stats: dict[str, Any] = {"site": manifest.site, "task": manifest.task, "n": int(len(rows))}
    stats["numeric"] = {c: _moments(_numeric(rows[c])) for c in schema.columns_with("numeric")}
    stats["omics"] = {c: _moments(_numeric(rows[c])) for c in schema.columns_with("omics")}
    stats["categorical"] = {
        c: {str(k): int(v) for k, v in rows[c].dropna().astype(str).value_counts().items()}
        for c in schema.columns_with("categorical")
    }
    if manifest.task in ("binary", "multiclass"):
        labels = rows[schema.label_column].dropna().astype(str)
        stats["labels"] = {str(k): int(v) for k, v in labels.value_counts().items()}
        # every split's labels, for the server's rare-class rule across sites (counts only)
        every = manifest.table[schema.label_column].dropna().astype(str)
        stats["label_counts"] = {str(k): int(v) for k, v in every.value_counts().items()}
    stats["present"] = {m: int(_presence(rows, schema, m).sum()) for m in schema.modalities}
    stats["shapes"] = {}
    for modality in ("image", "series"):
        columns = schema.columns_with(modality)
        if columns:
            stats["shapes"][modality] = _first_shape(manifest, columns[0], rows, schema)
    return stats


def _rows_of_split(manifest: Manifest, split: str) -> pd.DataFrame:
    return manifest.table[manifest.split_mask(split)]


def _presence(rows: pd.DataFrame, schema: Schema, modality: str) -> np.ndarray:
    columns = schema.modality_columns(modality)
    if modality == "tabular":
        # A tabular record with every cell missing is still present: missingness is informative
        # and carried by the indicators.
        return np.ones(len(rows), dtype=bool)
    return rows[columns].notna().any(axis=1).to_numpy()


def _first_shape(manifest: Manifest, column: str, rows: pd.DataFrame, schema: Schema) -> list[int]:

    if column in schema.shapes:
        return list(schema.shapes[column])
    for index in rows.index:
        path = manifest.file_path(column, int(manifest.table.index.get_loc(index)))
        if path is not None:
            return list(read_file_array(path, modality="image" if schema.columns[column] == "image" else "series").shape)
    return []


def merge_statistics(stats: list[dict[str, Any]], *, schema: Schema, task: str) -> FeatureSpec:
    """Merge per-site statistics into the run's :class:`FeatureSpec`.

    Means and standard deviations are pooled from counts and sums; vocabularies are the
    schema's when it fixes them, else the union of what the sites saw, sorted.
    """
    if not stats:
        raise StatisticsError("no site returned statistics: is any site connected?")

    def pooled(kind: str) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for column in schema.columns_with(kind):
            n = sum(s[kind][column][0] for s in stats)
            total = sum(s[kind][column][1] for s in stats)
            squares = sum(s[kind][column][2] for s in stats)
            mean = total / n if n else 0.0
            var = max(squares / n - mean * mean, 0.0) if n else 1.0
            std = math.sqrt(var) if var > 1e-12 else 1.0
            out[column] = (mean, std)
        return out

    categorical = {}
    for column in schema.columns_with("categorical"):
        if column in schema.categories:
            categorical[column] = list(schema.categories[column])
        else:
            categorical[column] = sorted({v for s in stats for v in s["categorical"][column]})

    classes: list[str] = []
    if task in ("binary", "multiclass"):
        if schema.classes:
            classes = list(schema.classes)
        else:
            classes = sort_classes(label for s in stats for label in s.get("labels", {}))
        if len(classes) < 2:
            raise StatisticsError(f"task {task!r} needs at least 2 classes over all sites; found {classes}")
        if task == "binary" and len(classes) != 2:
            raise StatisticsError(f"task 'binary' needs exactly 2 classes; the sites have {classes}: use task=multiclass")

    shapes: dict[str, list[int]] = {}
    for s in stats:
        for modality, shape in s["shapes"].items():
            if not shape:
                continue
            if modality in shapes and shapes[modality] != shape:
                raise StatisticsError(
                    f"site {s['site']!r}: {modality} shape {shape} differs from another site's {shapes[modality]}"
                )
            shapes[modality] = shape
    files = {m: schema.columns_with(m)[0] for m in ("image", "series") if schema.columns_with(m)}
    modalities = [m for m in schema.modalities if m not in files or m in shapes]
    return FeatureSpec(
        task=task,
        classes=classes,
        numeric=pooled("numeric"),
        categorical=categorical,
        omics=pooled("omics"),
        files=files,
        shapes=shapes,
        modalities=modalities,
    )


def encode_tabular(rows: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """Encode tabular columns as float32 [N, spec.tabular_width].

    Numerics are standardised with the federated mean/std; a missing value becomes the mean
    (0 after standardising) with its missing flag set, never a silent zero. Categories are
    one-hot; a missing or unseen category sets the column's missing flag.
    """
    parts: list[np.ndarray] = []
    for column, (mean, std) in spec.numeric.items():
        values = _numeric(rows[column])
        missing = ~np.isfinite(values)
        parts.append(np.where(missing, 0.0, (values - mean) / std)[:, None])
        parts.append(missing[:, None].astype(np.float64))
    for column, vocabulary in spec.categorical.items():
        index = {value: i for i, value in enumerate(vocabulary)}
        codes = rows[column].map(lambda v: index.get(str(v), -1) if pd.notna(v) else -1).to_numpy(dtype=np.int64)
        onehot = np.zeros((len(rows), len(vocabulary) + 1))
        onehot[np.arange(len(rows)), np.where(codes < 0, len(vocabulary), codes)] = 1.0
        parts.append(onehot)
    if not parts:
        return np.zeros((len(rows), 0), dtype=np.float32)
    return np.concatenate(parts, axis=1).astype(np.float32)


def encode_omics(rows: pd.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Standardise the omics vector; returns (float32 [N, G], present bool [N]). A sample whose
    omics cells are all empty has no omics; a single empty cell is imputed with the mean."""
    columns = list(spec.omics)
    values = np.stack([_numeric(rows[c]) for c in columns], axis=1) if columns else np.zeros((len(rows), 0))
    means = np.array([spec.omics[c][0] for c in columns])
    stds = np.array([spec.omics[c][1] for c in columns])
    finite = np.isfinite(values)
    present = finite.any(axis=1)
    encoded = np.where(finite, (values - means) / stds, 0.0)
    return encoded.astype(np.float32), present
