"""The checks behind ``client.manifest``: parsing a manifest CSV and validating its columns,
cells and referenced files. Every check returns a list of ``Problem`` and never raises, so
the caller can report all of them at once.

Row numbers are as a spreadsheet shows them: the header is row 1, DataFrame row ``i`` is row
``i + 2``.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from client.schema import (
    CANONICAL_NAMES,
    FILE_ROLES,
    IMAGE_EXTENSIONS,
    MISSING_SPELLINGS,
    NONFINITE_TOKENS,
    SERIES_EXTENSIONS,
    SPLITS,
    Schema,
)

__all__ = ["Problem", "parse_csv", "check_columns", "check_values", "check_files", "site_warnings", "REQUIRED_NAMES"]

# Default column names for required roles, used when the schema has no column of that role.
REQUIRED_NAMES = {role: CANONICAL_NAMES[role] for role in ("id", "label", "time", "event")}
_FIRST_ROW = 2
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
_BOUND = re.compile(r"^(<=|>=|<|>|\u2264|\u2265|~)\s*[+-]?\d")
_WITH_UNIT = re.compile(r"^[+-]?\d+(\.\d+)?\s*[^\d\s.,]+$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located as precisely as known.

    Args:
        file: the manifest (or folder) as the user named it.
        row: spreadsheet row (header = 1), or None for the whole file.
        column: column name, or None for the whole row or file.
        message: what was expected, what was found, and how to fix it.
    """

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        parts = [self.file]
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        return f"{', '.join(parts)}: {self.message}"


def _show(value: object, limit: int = 60) -> str:
    text = str(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _row_problems(file: str, column: str, cells: pd.Series, mask: np.ndarray, message: str) -> list[Problem]:
    """A Problem for every row where ``mask`` holds; ``{value}`` in ``message`` is the cell."""
    return [
        Problem(file, int(i) + _FIRST_ROW, column, message.format(value=_show(cells.iat[i])))
        for i in np.flatnonzero(mask)
    ]


def parse_csv(path: Path, *, file: str) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read a manifest into a DataFrame of stripped strings (empty cells -> None).

    Args:
        path: the CSV to read.
        file: how ``path`` is named in problems.

    Returns:
        The table (None when it could not be built) and the problems found.
    """
    if not path.exists():
        return None, [Problem(file, None, None, "file not found")]
    if not path.is_file():
        return None, [Problem(file, None, None, "not a file")]
    try:
        data = path.read_bytes()
    except OSError as err:
        return None, [Problem(file, None, None, f"cannot read the file ({err.strerror or err})")]
    if not data:
        return None, [Problem(file, None, None, "file is empty (0 bytes); expected a header row and one row per sample")]
    if data.startswith(b"PK\x03\x04"):
        return None, [Problem(file, None, None, "not a CSV: this looks like an Excel workbook; export it as 'CSV UTF-8'")]
    if b"\x00" in data:
        return None, [Problem(file, None, None, "not a CSV: the file holds binary content; save the manifest as CSV text")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        msg = f"not a CSV in UTF-8: undecodable byte 0x{data[err.start]:02x} at offset {err.start}; save it as 'CSV UTF-8'"
        return None, [Problem(file, None, None, msg)]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        records = [[cell.strip() for cell in record] for record in reader]
    except csv.Error as err:
        return None, [Problem(file, reader.line_num, None, f"not a valid CSV ({err})")]
    while records and not any(records[-1]):
        records.pop()  # trailing blank lines
    if not records or not any(records[0]):
        return None, [Problem(file, 1, None, "the header row is empty; row 1 must name the columns")]
    header, rows = records[0], records[1:]
    if len(header) == 1:
        for delimiter, name in ((";", "';' (semicolon)"), ("\t", "a tab")):
            if delimiter in header[0]:
                msg = f"wrong delimiter: the header is split by {name}; columns must be separated by ','"
                return None, [Problem(file, 1, None, msg)]
    problems = [Problem(file, 1, None, f"column {i + 1} has no name") for i, name in enumerate(header) if not name]
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            problems.append(Problem(file, 1, name, "column name appears more than once in the header"))
        seen.add(name)
    for i, record in enumerate(rows):
        if len(record) != len(header):
            msg = f"has {len(record)} fields, expected {len(header)} (one per header column)"
            problems.append(Problem(file, i + _FIRST_ROW, None, "row is blank; delete it" if not any(record) else msg))
    if not rows:
        problems.append(Problem(file, None, None, "site has no samples: the file has a header but no data rows"))
    if problems:
        return None, problems
    table = pd.DataFrame([[c if c else None for c in r] for r in rows], columns=header, dtype=object)
    return table, []


def check_columns(
    table: pd.DataFrame, schema: Schema, task: str | None, *, file: str, schema_source: str
) -> list[Problem]:
    """Unknown columns, columns of the schema that are absent, and missing required columns."""
    problems = []
    for col in table.columns:
        if col not in schema.columns:
            msg = f"unknown column, not in {schema_source}; add it there with a role (or role 'ignore')"
            problems.append(Problem(file, 1, col, msg))
    required = ["id"] + (["time", "event"] if task == "survival" else ["label"] if task else [])
    if task is None and not (schema.columns_with("time") and schema.columns_with("event")):
        required.append("label")
    required_cols = set()
    for role in required:
        named = schema.columns_with(role)
        col = named[0] if named else REQUIRED_NAMES[role]
        required_cols.add(col)
        if col not in table.columns:
            problems.append(Problem(file, 1, col, f"missing required column {col!r} (role {role!r})"))
    for col, role in schema.columns.items():
        if col not in table.columns and col not in required_cols:
            msg = f"column of {schema_source} (role {role!r}) is missing; add it (empty cells are allowed)"
            problems.append(Problem(file, 1, col, msg))
    return problems


def _numbers(cells: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values as floats, mask of non-numbers, mask of nan/inf) for the non-empty cells."""
    present = cells.notna().to_numpy()
    values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float)
    tokens = cells.str.lower().isin(NONFINITE_TOKENS).to_numpy(dtype=bool)
    nonfinite = present & (tokens | np.isinf(values))
    bad = present & ~np.isfinite(values) & ~nonfinite
    return values, bad, nonfinite


def _not_a_number(value: str) -> str:
    """Why ``value`` is not a number, and the fix, for the common spellings of each case."""
    found = f"expected a number, found {_show(value)}"
    text = str(value).strip()
    if text.lower() in MISSING_SPELLINGS:
        return f"{found}: an empty cell is the only missing value; leave the cell empty"
    if _DECIMAL_COMMA.match(text):
        return f"{found}: write a point as the decimal separator and no thousands separator (12.5, 1000)"
    if _BOUND.match(text):
        return f"{found}: a bound is not a value; write the number alone or leave the cell empty"
    if _WITH_UNIT.match(text):
        return f"{found}: write the number without its unit"
    return found


def _check_numbers(file: str, col: str, cells: pd.Series) -> tuple[np.ndarray, list[Problem]]:
    values, bad, nonfinite = _numbers(cells)
    problems = [Problem(file, int(i) + _FIRST_ROW, col, _not_a_number(cells.iat[i])) for i in np.flatnonzero(bad)]
    problems += _row_problems(
        file, col, cells, nonfinite, "found {value}: nan/inf are not allowed; leave the cell empty for a missing value"
    )
    return values, problems


def _check_ids(file: str, col: str, cells: pd.Series) -> list[Problem]:
    empty = f"{col} is empty; every sample needs an id, unique within its site"
    problems = _row_problems(file, col, cells, cells.isna().to_numpy(), empty)
    present = cells.dropna()
    repeated = present.duplicated(keep="first")
    first = present[~repeated]
    first_row = dict(zip(first.to_numpy(), first.index.to_numpy() + _FIRST_ROW))
    for i, value in present[repeated].items():
        msg = (f"duplicate id {_show(value)}, first used in row {first_row[value]}; ids must be unique within a "
               "site (other sites may use the same ids)")
        problems.append(Problem(file, int(i) + _FIRST_ROW, col, msg))
    return problems


def _check_labels(file: str, col: str, cells: pd.Series, schema: Schema, task: str) -> list[Problem]:
    problems = _row_problems(file, col, cells, cells.isna().to_numpy(), f"{col} is empty; every sample needs a label")
    present = cells.notna().to_numpy()
    if task == "regression":
        return problems + _check_numbers(file, col, cells)[1]
    if schema.classes is not None:
        unknown = present & ~cells.isin(schema.classes).to_numpy()
        msg = "label {value} is not one of the known classes: " + ", ".join(schema.classes)
        problems += _row_problems(file, col, cells, unknown, msg)
    elif task == "binary" and cells.nunique() > 2:
        values = ", ".join(_show(v) for v in sorted(cells.dropna().unique())[:10])
        msg = f"task is binary but the labels take {cells.nunique()} values ({values}); set task: multiclass"
        problems.append(Problem(file, None, col, msg))
    return problems


def _check_survival(file: str, schema: Schema, table: pd.DataFrame) -> list[Problem]:
    problems = []
    for col in schema.columns_with("time"):
        cells = table[col]
        problems += _row_problems(file, col, cells, cells.isna().to_numpy(), "time is empty; survival needs a duration")
        values, number_problems = _check_numbers(file, col, cells)
        problems += number_problems
        with np.errstate(invalid="ignore"):
            negative = np.isfinite(values) & (values < 0)
        problems += _row_problems(file, col, cells, negative, "time must be >= 0, found {value}")
    for col in schema.columns_with("event"):
        cells = table[col]
        values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float)
        bad = cells.notna().to_numpy() & ~np.isin(values, (0.0, 1.0))
        problems += _row_problems(file, col, cells, cells.isna().to_numpy(), "event is empty; write 1 (event) or 0 (censored)")
        problems += _row_problems(file, col, cells, bad, "event must be 0 (censored) or 1 (event), found {value}")
    return problems


def check_values(table: pd.DataFrame, schema: Schema, task: str, *, file: str) -> list[Problem]:
    """Cell checks of every column present in both ``table`` and ``schema``, vectorised per column."""
    problems = []
    present = {c: r for c, r in schema.columns.items() if c in table.columns}
    for col, role in present.items():
        cells = table[col]
        if role == "id":
            problems += _check_ids(file, col, cells)
        elif role == "label" and task != "survival":
            problems += _check_labels(file, col, cells, schema, task)
        elif role in ("numeric", "omics"):
            problems += _check_numbers(file, col, cells)[1]
        elif role == "split":
            bad = cells.notna().to_numpy() & ~cells.isin(SPLITS).to_numpy()
            problems += _row_problems(file, col, cells, bad, "split must be train, val or test (or empty), found {value}")
        elif role == "categorical" and col in schema.categories:
            known = schema.categories[col]
            bad = cells.notna().to_numpy() & ~cells.isin(known).to_numpy()
            problems += _row_problems(file, col, cells, bad, "value {value} is not one of the known values: " + ", ".join(known))
    if task == "survival":
        problems += _check_survival(file, schema, table[[c for c in table.columns if c in present]])
    return problems


def _channels_note(shape: list[int], note: str) -> str:
    return f"{shape} ({note})" if note else str(shape)


def _read_shape(path: Path, role: str, *, decode: bool = True) -> tuple[list[int] | None, str, str | None]:
    """(shape as [C, ...], a note such as the PIL mode, error) of one referenced file; an image
    is decoded unless ``decode`` is False (then only its header is read).

    Any exception is turned into an error message: a corrupt file must be reported, not
    crash the check.
    """
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            shape = list(array.shape)
            del array
            return ([1] + shape if len(shape) == 2 and role == "image" else shape), "", None
        if name.endswith((".nii", ".nii.gz")):
            import nibabel  # optional dependency

            dims = list(nibabel.load(path).shape)
            # NIfTI stores (X, Y, Z[, C]); report [C, D, H, W] like the other images.
            return ([dims[3]] + dims[:3] if len(dims) == 4 else [1] + dims), "", None
        if name.endswith(".csv"):
            with path.open(encoding="utf-8") as fh:
                header = fh.readline().strip()
            if not header:
                return None, "", "the series file is empty"
            return None, header, None  # the header: every series file of a column must share it
        from PIL import Image

        with Image.open(path) as image:
            if decode:
                image.load()
            bands = image.getbands()
            return [len(bands), image.height, image.width], f"mode {image.mode!r}", None
    except ImportError:
        return None, "", None
    except Exception as err:  # noqa: BLE001 - any failure to decode means the file is corrupt
        return None, "", f"cannot read the file ({type(err).__name__}: {err})"


def _nibabel_missing() -> bool:
    try:
        import nibabel  # noqa: F401
    except ImportError:
        return True
    return False


def check_files(
    table: pd.DataFrame, schema: Schema, *, folder: Path, file: str, open_files: bool = True, decode: bool = True
) -> tuple[list[Problem], list[str]]:
    """Extensions, existence, readability and shapes of the files named in image/series columns.

    Each file is opened once. Image shapes are compared with ``schema.shapes[col]`` when
    given, else with the first readable file of the column.

    Args:
        table: the manifest cells.
        schema: column roles and optional expected shapes.
        folder: the manifest's folder; cells are paths relative to it.
        file: how the manifest is named in problems.
        open_files: when False, only the extensions are checked.
        decode: when False, images are opened for their header (format, shape) but not decoded.

    Returns:
        The problems and the warnings (columns that cannot be fully checked).
    """
    problems: list[Problem] = []
    warnings: list[str] = []
    for col in schema.columns_with(*FILE_ROLES):
        if col not in table.columns:
            continue
        role = schema.columns[col]
        cells = table[col]
        extensions = IMAGE_EXTENSIONS + (".npy",) if role == "image" else SERIES_EXTENSIONS
        wrong = cells.notna().to_numpy() & ~cells.str.lower().str.endswith(extensions).fillna(False).to_numpy(dtype=bool)
        problems += _row_problems(file, col, cells, wrong, f"expected a {role} file ({' '.join(extensions)}), found {{value}}")
        if not open_files:
            continue
        if role == "image" and _nibabel_missing() and cells.str.lower().str.endswith((".nii", ".nii.gz")).any():
            warnings.append(f"{file}: column {col!r}: nibabel is not installed, so NIfTI files were only checked to exist")
        expected = schema.shapes.get(col)
        expected_from = "schema.yaml" if expected is not None else ""
        header, header_from = None, ""
        for i in np.flatnonzero(cells.notna().to_numpy() & ~wrong):
            row, rel = int(i) + _FIRST_ROW, cells.iat[i]
            path = folder / rel
            if not path.is_file():
                problems.append(Problem(file, row, col, f"file not found: {_show(rel)} (looked for {path})"))
                continue
            shape, note, error = _read_shape(path, role, decode=decode)
            if error is not None:
                problems.append(Problem(file, row, col, f"{_show(rel)}: {error}"))
            elif role == "series" and note:
                if header is None:
                    header, header_from = note, f"row {row}"
                elif note != header:
                    msg = f"{_show(rel)}: series columns {note!r} differ from those of {header_from} ({header!r})"
                    problems.append(Problem(file, row, col, msg))
            elif shape is not None and role == "image":
                if expected is None:
                    expected, expected_from = shape, f"row {row}"
                elif list(shape) != list(expected):
                    msg = f"{_show(rel)}: expected shape {list(expected)} (as in {expected_from}), "
                    problems.append(Problem(file, row, col, msg + f"found {_channels_note(shape, note)}"))
    return problems, warnings


def site_warnings(table: pd.DataFrame, schema: Schema, task: str, *, file: str) -> list[str]:
    """Things that are allowed but likely wrong: one class only, a file column with no files."""
    warnings = []
    labels = [c for c in schema.columns_with("label") if c in table.columns]
    if task in ("binary", "multiclass") and labels:
        values = table[labels[0]].dropna().unique()
        if len(values) == 1:
            warnings.append(
                f"{file}: column {labels[0]!r}: every label is {_show(values[0])}; a site with one class only "
                "cannot learn to separate classes locally and its AUC is undefined"
            )
    for col in schema.columns_with(*FILE_ROLES):
        if col in table.columns and table[col].isna().all():
            role = schema.columns[col]
            warnings.append(f"{file}: column {col!r}: empty for every row, so this site has no {role} data")
    return warnings
