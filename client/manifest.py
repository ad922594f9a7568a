"""Reading and validating site manifests: one CSV per site, or a folder of them with an
optional ``schema.yaml``. Every problem of every file is collected and raised as one
``ManifestError`` whose ``str()`` a command line can print as is.

The checks themselves live in ``client.manifest_checks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from client.manifest_checks import Problem, check_columns, check_files, check_values, parse_csv, site_warnings
from client.role_inference import infer_task
from client.schema import FILE_ROLES, SPLITS, TASKS, Schema, SchemaError
from client.site_schema import SCHEMA_FILE, Inferred, check_classes, resolve_schema

__all__ = ["Problem", "ManifestError", "Manifest", "read_manifest", "read_manifest_folder", "SCHEMA_FILE"]

_MAX_LINES = 50


class ManifestError(ValueError):
    """Every problem found in one or more manifests; ``str()`` lists them one per line.

    Args:
        problems: the problems, in the order found (at least one).
    """

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = list(problems)

    def __str__(self) -> str:
        lines = [str(p) for p in self.problems[:_MAX_LINES]]
        if len(self.problems) > _MAX_LINES:
            lines.append(f"... and {len(self.problems) - _MAX_LINES} more")
        return "\n".join(lines) if lines else "no problems"


@dataclass
class Manifest:
    """One site's validated manifest.

    Args:
        site: the site name (the file stem).
        path: absolute path of the CSV.
        table: cells as read (stripped strings; empty cell -> None); DataFrame row ``i`` is
            spreadsheet row ``i + 2``.
        schema: column roles.
        task: the learning task, one of ``TASKS``.
        warnings: things allowed but likely wrong, for the user to read.
        inferred: what was inferred from the cells rather than declared.
        assigned_split: the site's own train/val/test split when the manifest has no split
            column (:func:`client.splits.with_site_splits`); None otherwise.
    """

    site: str
    path: Path
    table: pd.DataFrame
    schema: Schema
    task: str
    warnings: list[str] = field(default_factory=list)
    inferred: Inferred = field(default_factory=Inferred)
    assigned_split: np.ndarray | None = None

    def split_mask(self, split: str) -> np.ndarray:
        """Rows of ``split`` (bool [N]); without a split column the site's assigned split, or
        else every row is ``train``; an empty split cell means ``train``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        column = self.schema.split_column
        if column is None or column not in self.table.columns:
            if self.assigned_split is not None:
                return self.assigned_split == split
            return np.full(len(self.table), split == SPLITS[0])
        return (self.table[column].fillna(SPLITS[0]) == split).to_numpy()

    def file_path(self, column: str, index: int) -> Path | None:
        """Absolute path of the file in ``column`` at DataFrame row ``index``; None if the cell is empty."""
        if self.schema.columns.get(column) not in FILE_ROLES:
            raise ValueError(f"column {column!r} of {self.path} is not a file column ({', '.join(FILE_ROLES)})")
        value = self.table[column].iat[index]
        if value is None or pd.isna(value) or value == "":
            return None
        return self.path.parent / str(value)


def _sort_key(schema_columns: list[str]):
    order = {c: i for i, c in enumerate(schema_columns)}

    def key(problem: Problem) -> tuple[int, int]:
        return (problem.row or 0, order.get(problem.column, -1) if problem.column is not None else -1)

    return key


def _resolve_task(schema: Schema, table: pd.DataFrame, task: str | None) -> str | None:
    if task is not None:
        return task
    try:
        return infer_task(schema, table)
    except ValueError:
        return None  # check_columns reports the missing label


def _validate(
    table: pd.DataFrame,
    path: Path,
    *,
    file: str,
    schema: Schema,
    schema_source: str,
    task: str | None,
    check_files_: bool,
    inferred: Inferred,
    found: list[Problem],
    decode_files: bool = True,
) -> tuple[Manifest | None, list[Problem]]:
    """All checks of one parsed manifest, sorted by row together with ``found`` (problems of
    this file found across sites); the Manifest is None when there are problems."""
    task = _resolve_task(schema, table, task)
    problems = list(found) + check_columns(table, schema, task, file=file, schema_source=schema_source)
    if task is None:
        if not problems:
            problems.append(Problem(file, None, None, "cannot tell the task from the labels; set 'task' in schema.yaml"))
    else:
        problems += check_values(table, schema, task, file=file)
    file_problems, warnings = check_files(table, schema, folder=path.parent, file=file, open_files=check_files_,
                                            decode=decode_files)  # fmt: skip
    problems += file_problems
    if problems:
        return None, sorted(problems, key=_sort_key(list(table.columns)))
    warnings += site_warnings(table, schema, task, file=file)
    manifest = Manifest(site=path.stem, path=path, table=table, schema=schema, task=task, warnings=warnings,
                        inferred=inferred)  # fmt: skip
    return manifest, []


def _check_task(task: str | None) -> None:
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def read_manifest(
    path: str | Path, *, schema: Schema | None = None, task: str | None = None, check_files: bool = True
) -> Manifest:
    """Read and validate one site manifest.

    Args:
        path: the CSV; its stem is the site name.
        schema: column roles (e.g. from schema.yaml); columns it does not name are inferred
            from the file (``client.site_schema.resolve_schema``).
        task: overrides ``schema.task`` and inference.
        check_files: open every image/series file to check it exists, reads and has the
            right shape.

    Raises:
        ManifestError: listing every problem, each with file, row and column.
        ValueError: for an unknown ``task``.
    """
    _check_task(task)
    file = str(path)
    path = Path(path).absolute()
    table, problems = parse_csv(path, file=file)
    if table is None:
        raise ManifestError(problems)
    schema, found, inferred = resolve_schema([(file, table)], schema, declared_source="the schema")
    inferred = replace(inferred, task=inferred.task and task is None)
    if schema is None:
        raise ManifestError(found)
    manifest, problems = _validate(
        table, path, file=file, schema=schema, schema_source=f"the columns of {file}", task=task,
        check_files_=check_files, inferred=inferred, found=found,
    )  # fmt: skip
    if manifest is None:
        raise ManifestError(problems)
    return manifest


def read_manifest_folder(
    folder: str | Path, *, task: str | None = None, check_files: bool = True, decode_files: bool = True
) -> list[Manifest]:
    """Read and validate every ``*.csv`` of a folder, sorted by name.

    Roles are those of ``schema.yaml`` beside the manifests, when present, and the others
    inferred over the cells of all sites (``client.site_schema``); every manifest must have
    the first one's columns. Without a task in the arguments or the schema, it is inferred
    once from the labels of all sites; inferred classes too rare to split are reported.

    Args:
        folder: the folder holding one CSV per site.
        task: overrides ``schema.task`` and inference.
        check_files: open every image/series file (see ``read_manifest``).
        decode_files: with ``check_files``, decode every image too (a truncated file fails
            only there); False reads each image's header alone (format and shape).

    Raises:
        ManifestError: listing the problems of all files (and of ``schema.yaml``).
        ValueError: for an unknown ``task``.
    """
    _check_task(task)
    name = str(folder)
    folder = Path(folder)
    if not folder.is_dir():
        why = "not a folder" if folder.exists() else "folder not found"
        raise ManifestError([Problem(name, None, None, why)])
    paths = sorted(folder.glob("*.csv"), key=lambda p: p.name)
    if not paths:
        raise ManifestError([Problem(name, None, None, "no manifests: the folder holds no *.csv file (one per site)")])
    declared, schema_path = None, folder / SCHEMA_FILE
    if schema_path.exists():
        try:
            declared = Schema.load(schema_path)
        except SchemaError as err:
            problems = [Problem(str(schema_path), None, None, f"key {k!r}: {m}" if k else m) for k, m in err.problems]
            raise ManifestError(problems) from None
    problems: list[Problem] = []
    parsed: list[tuple[Path, str, pd.DataFrame]] = []
    for path in paths:
        file = str(Path(name) / path.name)
        table, found = parse_csv(path, file=file)
        problems += found
        if table is not None:
            parsed.append((path.absolute(), file, table))
    if not parsed:
        raise ManifestError(problems)
    tables = [(file, table) for _, file, table in parsed]
    schema, found, inferred = resolve_schema(tables, declared, declared_source=str(schema_path))
    inferred = replace(inferred, task=inferred.task and task is None)
    if schema is None:
        raise ManifestError(problems + found)
    first = parsed[0][1]
    schema_source = f"the columns of {first} (the first manifest; add the column to a {SCHEMA_FILE} to set its role)"
    if declared is not None:
        schema_source = f"{schema_path} nor among the columns of {first} (the first manifest)"
    if task is None and schema.task is None:
        task = _resolve_task(schema, pd.concat([t for _, t in tables], ignore_index=True), None)
    found += check_classes(tables, schema, task or schema.task)
    manifests = []
    for path, file, table in parsed:
        manifest, file_problems = _validate(
            table, path, file=file, schema=schema, schema_source=schema_source, task=task, check_files_=check_files,
            decode_files=decode_files,
            inferred=inferred, found=[p for p in found if p.file == file],
        )  # fmt: skip
        problems += file_problems
        if manifest is not None:
            manifests.append(manifest)
    problems += [p for p in found if p.file not in {file for _, file, _ in parsed}]
    if problems:
        raise ManifestError(problems)
    return manifests
