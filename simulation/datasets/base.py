"""The one shape every dataset loader returns: a sample table plus its schema.

A loader turns a public data set (or a user's folder) into one row per sample with the
manifest column names (``sample_id``, ``label`` or ``time`` + ``event``, optional
``group_id`` / ``split``, natural-site columns, feature columns). Partitioners, splitters
and the site writer work on this table only, so every data set gets every partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from client.schema import Schema
from fusion_models.registry import Registry

__all__ = ["SampleTable", "DATASETS", "DATA_DIR", "resolve_root", "require_file", "require_columns"]

#: The vendored data folder at the repository root (``data/<name>/``).
DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@dataclass
class SampleTable:
    """One row per sample, in manifest column names, with a role for every column.

    Attributes:
        name: the dataset's registry name (``"ham10000"``).
        table: one row per sample; ``sample_id`` (unique str), ``label`` (str) or ``time``
            (float days) + ``event`` (int 0/1), optional ``group_id`` and ``split``, natural
            site column(s), feature columns. Image/series cells hold absolute paths or None.
        schema: a role for every column of ``table`` (site columns have role ``"ignore"``).
        site_column: the column holding the natural site, or None if the data has none.
        description: one line for the CLI.
    """

    name: str
    table: pd.DataFrame
    schema: Schema
    site_column: str | None
    description: str

    def __post_init__(self) -> None:
        missing = [c for c in self.table.columns if c not in self.schema.columns]
        if missing:
            raise ValueError(f"dataset {self.name!r}: columns without a role in the schema: {missing}")
        if "sample_id" not in self.table.columns:
            raise ValueError(f"dataset {self.name!r}: the table has no 'sample_id' column")
        dup = self.table["sample_id"][self.table["sample_id"].duplicated()]
        if len(dup):
            raise ValueError(f"dataset {self.name!r}: sample_id is not unique, e.g. {dup.iloc[0]!r}")
        if self.site_column is not None and self.site_column not in self.table.columns:
            raise ValueError(f"dataset {self.name!r}: site column {self.site_column!r} is not in the table")

    def __len__(self) -> int:
        return len(self.table)


#: Dataset loaders by name; each is ``load(*, root=None, task=None, **params) -> SampleTable``.
DATASETS: Registry[Callable[..., SampleTable]] = Registry("dataset")


def resolve_root(root: str | Path | None, name: str) -> tuple[Path, bool]:
    """The folder to read, and whether it is the vendored default.

    Args:
        root: a user-given folder, or None for ``data/<name>/``.
        name: the dataset's folder name under ``data/``.

    Returns:
        ``(folder, is_default)``.
    """
    default = (DATA_DIR / name).resolve()
    if root is None:
        return default, True
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: root folder {str(path)!r} does not exist")
    return path, path == default


def require_file(path: Path, *, dataset: str, what: str) -> Path:
    """Return ``path`` if it is a file, else raise an error that names it and says what it holds."""
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset {dataset!r}: expected {what} at {str(path)!r}, but there is no such file; "
            "pass root= a folder with the same layout as the vendored one (see its README)"
        )
    return path


def require_columns(frame: pd.DataFrame, columns: list[str], *, dataset: str, path: Path) -> None:
    """Raise an error naming the file and every missing column."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"dataset {dataset!r}: {str(path)!r} lacks the column(s) {missing}; found {list(frame.columns)[:12]}"
        )
