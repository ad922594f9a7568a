"""A column's role and the learning task, inferred from a manifest's cells where no
``schema.yaml`` gives them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from client.schema import (
    CANONICAL_NAMES,
    IMAGE_EXTENSIONS,
    MISSING_SPELLINGS,
    NONFINITE_TOKENS,
    SERIES_EXTENSIONS,
    Schema,
    SchemaError,
)

__all__ = ["non_empty_cells", "cell_kinds", "infer_role", "infer_schema", "infer_task", "sort_classes"]

_NAMED_ROLES = {name: role for role, name in CANONICAL_NAMES.items()}
# Labels that are integers with at most this many distinct values are class ids, not targets.
_MAX_INTEGER_CLASSES = 20


def non_empty_cells(series: pd.Series) -> pd.Series:
    """The non-empty cells of a column, as stripped strings (index kept)."""
    values = series.dropna().astype(str).str.strip()
    return values[values != ""]


def cell_kinds(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(numbers, missing spellings) as bool masks over non-empty stripped cells.

    Literal nan/inf count as numbers, so validation reports them as such instead of the
    column turning categorical; the rest of the cells (neither mask) are text.
    """
    lower = values.str.lower()
    numbers = pd.to_numeric(values, errors="coerce").notna().to_numpy() | lower.isin(NONFINITE_TOKENS).to_numpy()
    missing = lower.isin(MISSING_SPELLINGS).to_numpy() & ~numbers
    return numbers, missing


def _mostly_ending(values: pd.Series, extensions: tuple[str, ...]) -> bool:
    return bool(values.str.lower().str.endswith(extensions).mean() > 0.5)


def infer_role(name: str, values: pd.Series) -> str:
    """Role of one column from its name, else from its non-empty cells (``values``).

    The rule is "more than half": a column is ``image`` (``series``) when more than half of
    its cells are image (series) paths, ``numeric`` when more than half of its cells that are
    not a missing-value spelling are numbers, else ``categorical``. The cells that do not
    fit are then reported by validation, so a handful of stray cells can neither turn a
    numeric column categorical nor pass unnoticed.
    """
    if name in _NAMED_ROLES:
        return _NAMED_ROLES[name]
    numbers, missing = cell_kinds(values) if not values.empty else (np.zeros(0, bool), np.zeros(0, bool))
    values = values[~missing]
    if values.empty:
        # Nothing to go by; a column named like an image keeps that role so a site
        # without images still lines up with the others.
        return "image" if _names_image(name) else "ignore"
    image_ext = IMAGE_EXTENSIONS + ((".npy",) if _names_image(name) else ())
    if _mostly_ending(values, image_ext):
        return "image"
    if _mostly_ending(values, SERIES_EXTENSIONS):
        return "series"
    numbers = numbers[~missing]
    return "numeric" if numbers.sum() > (~numbers).sum() else "categorical"


def _names_image(name: str) -> bool:
    lower = name.lower()
    return "image" in lower or "img" in lower


def infer_schema(table: pd.DataFrame, *, source: str) -> Schema:
    """Infer every column's role from its name and cells.

    The names of ``CANONICAL_NAMES`` take the role of their name. Other columns are
    ``image`` when most non-empty cells end in an image extension (``.npy`` too when the
    name contains "image"/"img"), ``series`` for ``.npy``/``.csv`` paths, ``numeric`` when
    most cells are numbers, else ``categorical`` (see ``infer_role``). A column with no
    non-empty cell is ``ignore`` (``image`` if its name says so).

    Args:
        table: manifest cells as strings, empty cells as None/NaN.
        source: the manifest the table came from, named in errors.

    Raises:
        SchemaError: when the table has no columns.
    """
    if len(table.columns) == 0:
        raise SchemaError(source, [(None, "the manifest has no columns to infer a schema from")])
    columns = {str(c): infer_role(str(c), non_empty_cells(table[c])) for c in table.columns}
    return Schema(columns=columns)


def _numbers(values: pd.Series) -> np.ndarray | None:
    """Values as finite floats, or None when any is not a finite number."""
    parsed = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if len(parsed) == 0 or not np.isfinite(parsed).all():
        return None
    return parsed


def infer_task(schema: Schema, table: pd.DataFrame) -> str:
    """The learning task: ``schema.task`` if set, else inferred from the columns and labels.

    Survival when ``time`` and ``event`` roles are present; otherwise from the label column:
    two classes (names in ``schema.classes``, or distinct values) -> binary, more ->
    multiclass; when more than half of the labels are numbers (the rule of ``infer_role``),
    integers with at most 20 distinct values are class ids and other numbers a regression
    target, and the other labels are left for validation to report. A site with one class
    only is binary.

    Args:
        schema: column roles (and optionally the task and classes).
        table: manifest cells as strings.

    Raises:
        ValueError: when there is neither a label nor time and event, or no label values.
    """
    if schema.task is not None:
        return schema.task
    if schema.columns_with("time") and schema.columns_with("event"):
        return "survival"
    labels = schema.columns_with("label")
    if not labels:
        raise ValueError("cannot infer the task: no column has role 'label' (nor both 'time' and 'event')")
    if schema.classes is not None and len(schema.classes) >= 2:
        return "binary" if len(schema.classes) == 2 else "multiclass"
    if labels[0] not in table.columns:
        raise ValueError(f"cannot infer the task: the manifest has no column {labels[0]!r}")
    values = non_empty_cells(table[labels[0]])
    if values.empty:
        raise ValueError(f"cannot infer the task: column {labels[0]!r} has no values")
    is_number, _ = cell_kinds(values)
    numbers = _numbers(values[is_number])
    if numbers is None or is_number.sum() <= (~is_number).sum():
        return "binary" if values.nunique() <= 2 else "multiclass"
    distinct = np.unique(numbers)
    if all(math.isclose(v, round(v)) for v in distinct) and len(distinct) <= _MAX_INTEGER_CLASSES:
        return "binary" if len(distinct) <= 2 else "multiclass"
    return "regression"


def sort_classes(values: Any) -> list[str]:
    """Distinct class names in class-id order: numbers numerically first, then names."""

    def key(label: str) -> tuple[int, float | str]:
        try:
            return (0, float(label))
        except ValueError:
            return (1, label)

    return sorted({str(v) for v in values}, key=key)
