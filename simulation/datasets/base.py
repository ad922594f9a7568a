"""The one shape every dataset loader returns: a sample table plus its schema.

A loader turns a public data set (or a user's folder) into one row per sample: an id, a
label or time + event, optional group and split, natural-site columns and feature columns,
under any names, as the schema's roles say. Partitioners, splitters and the site writer
work on this table only, and find each column through the schema, so every data set gets
every partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from client.schema import Schema
from client.site_schema import Inferred
from fusion_models.registry import Registry

__all__ = ["SampleTable", "DATASETS", "DATA_DIR", "resolve_root", "require_file", "require_columns"]

#: The vendored data folder at the repository root (``data/<name>/``).
DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@dataclass
class SampleTable:
    """One row per sample, in manifest column names, with a role for every column.

    Attributes:
        name: the dataset's registry name (``"ham10000"``).
        table: one row per sample: the id (str), the label (str) or time (float days) +
            event (int 0/1), optional group and split, natural site column(s), feature
            columns. Image/series cells hold absolute paths or None.
        schema: a role for every column of ``table`` (site columns have role ``"ignore"``).
        site_column: the column holding the natural site, or None if the data has none.
        description: one line for the CLI.
        ids_per_site: ids and group ids are unique only within a natural site (each hospital
            numbers its own patients), so a sample is (site, id) and a group (site, group id);
            otherwise they are unique over the whole table (a HAM10000 lesion imaged by two
            sources is one group).
        inferred: what the loader inferred from the data rather than declared.
    """

    name: str
    table: pd.DataFrame
    schema: Schema
    site_column: str | None
    description: str
    ids_per_site: bool = False
    inferred: Inferred = field(default_factory=Inferred)

    def __post_init__(self) -> None:
        missing = [c for c in self.table.columns if c not in self.schema.columns]
        if missing:
            raise ValueError(f"dataset {self.name!r}: columns without a role in the schema: {missing}")
        if self.site_column is not None and self.site_column not in self.table.columns:
            raise ValueError(f"dataset {self.name!r}: site column {self.site_column!r} is not in the table")
        if self.ids_per_site and self.site_column is None:
            raise ValueError(f"dataset {self.name!r}: ids_per_site needs a site column to qualify the ids")
        id_column = self.schema.id_column
        if id_column is None or id_column not in self.table.columns:
            raise ValueError(f"dataset {self.name!r}: the table has no id column (role 'id' in the schema)")
        keys = self._keyed(self.table[id_column])
        dup = keys.duplicated()
        if dup.any():
            where = f" at site {keys[dup].iloc[0][0]!r}" if self.ids_per_site else ""
            raise ValueError(f"dataset {self.name!r}: {id_column} is not unique{where}, "
                             f"e.g. {self.table[id_column][dup].iloc[0]!r}")  # fmt: skip

    def __len__(self) -> int:
        return len(self.table)

    def _keyed(self, values: pd.Series) -> pd.Series:
        """``values`` as identities: (site, value) pairs when ids are per site, else as is."""
        if not self.ids_per_site:
            return values.astype(object)
        return pd.Series(list(zip(self.table[self.site_column].astype(str), values.astype(str))), index=values.index)

    def group_codes(self) -> np.ndarray:
        """[N] int group of each row, numbered in order of appearance: rows sharing a group id
        (within a natural site when ``ids_per_site``) share a code; a row without one is alone."""
        ids = self._keyed(self.table[self.schema.id_column])
        keys = [("s", i) for i in ids]
        column = self.schema.group_column
        if column is not None and column in self.table.columns:
            groups = self.table[column]
            present = groups.notna() & (groups.astype(str).str.strip() != "")
            keyed = self._keyed(groups.astype(object).where(present, ""))
            keys = [("g", g) if p else k for g, p, k in zip(keyed, present, keys)]
        codes, _ = pd.factorize(pd.Series(keys, dtype=object), sort=False)
        return np.asarray(codes, dtype=int)


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
