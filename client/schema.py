"""Column roles of a site manifest and the ``Schema`` record kept in ``schema.yaml``; the
names, splits and spellings every module shares. Inference lives in
``client.role_inference`` (one manifest) and ``client.site_schema`` (a folder of them)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from client.atomic_io import atomic_write_text

__all__ = [
    "ROLES",
    "SINGLE_ROLES",
    "CANONICAL_NAMES",
    "SPLITS",
    "MISSING_SPELLINGS",
    "FILE_ROLES",
    "TASKS",
    "MODALITY_ORDER",
    "SCHEMA_VERSION",
    "IMAGE_EXTENSIONS",
    "SERIES_EXTENSIONS",
    "NONFINITE_TOKENS",
    "Schema",
    "SchemaError",
]

ROLES = ("id", "label", "time", "event", "group", "split", "numeric", "categorical", "image", "series", "omics", "ignore")
#: Roles that at most one column may take; ``Schema.<role>_column`` names it.
SINGLE_ROLES = ("id", "label", "time", "event", "group", "split")
#: The column name that takes each single role by its name alone (when schema.yaml does not
#: give that role to another column), and the name the simulator's tables use.
CANONICAL_NAMES = {
    "id": "sample_id", "label": "label", "time": "time", "event": "event", "group": "group_id", "split": "split",
}  # fmt: skip
SPLITS = ("train", "val", "test")
# Cells of these roles hold a path relative to the manifest's folder.
FILE_ROLES = ("image", "series")
TASKS = ("binary", "multiclass", "regression", "survival")
MODALITY_ORDER = ("image", "tabular", "series", "omics")
SCHEMA_VERSION = 1

_MODALITY_ROLES = {"image": ("image",), "tabular": ("numeric", "categorical"), "series": ("series",), "omics": ("omics",)}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".nii", ".nii.gz")
SERIES_EXTENSIONS = (".npy", ".csv")
# Spellings float() accepts for non-finite values; manifests must use an empty cell instead.
NONFINITE_TOKENS = ("nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity")
#: Spellings of "no value" that exports write instead of an empty cell (compared lower-case).
#: They are not read as missing: an empty cell is the only missing value, so validation
#: reports them; but they never count as text when a column's role is inferred.
MISSING_SPELLINGS = ("na", "n/a", "n.a.", "null", "none", "-", "--", "\u2013", "\u2014", "?", ".", "missing")
_KEYS = ("schema_version", "task", "columns", "classes", "categories", "shapes")
_REQUIRED_KEYS = ("schema_version", "columns")


class SchemaError(ValueError):
    """A schema that cannot be used; ``str()`` names the source (file) and each bad key.

    Args:
        source: where the schema came from, e.g. the path of ``schema.yaml``.
        problems: ``(key, message)`` pairs; ``key`` is None for problems of the whole document.
    """

    def __init__(self, source: str, problems: list[tuple[str | None, str]]) -> None:
        super().__init__(source, problems)
        self.source = source
        self.problems = problems

    def __str__(self) -> str:
        lines = [f"{self.source}: key {key!r}: {msg}" if key else f"{self.source}: {msg}" for key, msg in self.problems]
        return "\n".join(lines)


def _unknown(value: str, known: tuple[str, ...] | list[str], what: str) -> str:
    close = difflib.get_close_matches(str(value), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {value!r}{hint}; known: {', '.join(known)}"


@dataclass
class Schema:
    """Role of every manifest column, plus optional vocabularies and image shapes.

    A schema.yaml may hold only some columns: the rest are inferred when the manifests are
    read (``client.site_schema.resolve_schema``).

    Args:
        columns: column -> role (one of ``ROLES``), in manifest column order.
        task: one of ``TASKS``; None means infer it from the labels.
        classes: label vocabulary; the index of a class is its class id.
        categories: fixed vocabulary per categorical column.
        shapes: expected ``[C, H, W]`` (or ``[C, D, H, W]``) per image column.
        schema_version: version of this record's layout; only ``SCHEMA_VERSION`` is read.
    """

    columns: dict[str, str]
    task: str | None = None
    classes: list[str] | None = None
    categories: dict[str, list[str]] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise SchemaError("Schema", problems)

    def _problems(self) -> list[tuple[str | None, str]]:
        out: list[tuple[str | None, str]] = []
        if self.schema_version != SCHEMA_VERSION:
            out.append(("schema_version", f"version {self.schema_version!r} is not supported; expected {SCHEMA_VERSION}"))
        if not isinstance(self.columns, Mapping):
            out.append(("columns", "expected a mapping of column name -> role"))
            return out
        for col, role in self.columns.items():
            if role not in ROLES:
                out.append((f"columns.{col}", _unknown(role, ROLES, "role")))
        for role in SINGLE_ROLES:
            named = [c for c, r in self.columns.items() if r == role]
            if len(named) > 1:
                out.append(("columns", f"role {role!r} is given to {len(named)} columns ({', '.join(named)}); at most one"))
        if self.task is not None and self.task not in TASKS:
            out.append(("task", _unknown(self.task, TASKS, "task")))
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            out.append(("classes", "class names must be unique"))
        # A vocabulary or shape for a column without a role is allowed: schema.yaml may
        # leave the role to inference, and the vocabulary makes it categorical (image).
        for col in self.categories:
            if self.columns.get(col, "categorical") != "categorical":
                out.append((f"categories.{col}", "vocabularies are only for columns with role 'categorical'"))
        for col, shape in self.shapes.items():
            if self.columns.get(col, "image") != "image":
                out.append((f"shapes.{col}", "shapes are only for columns with role 'image'"))
            elif len(shape) not in (3, 4) or any(n <= 0 for n in shape):
                out.append((f"shapes.{col}", f"expected [C, H, W] or [C, D, H, W] of positive integers, found {shape}"))
        return out

    def _single(self, role: str) -> str | None:
        named = [c for c, r in self.columns.items() if r == role]
        return named[0] if named else None

    @property
    def id_column(self) -> str | None:
        """The column with role ``id`` (sample ids, unique within a site), or None."""
        return self._single("id")

    @property
    def label_column(self) -> str | None:
        """The column with role ``label``, or None (survival has time and event instead)."""
        return self._single("label")

    @property
    def time_column(self) -> str | None:
        """The column with role ``time`` (survival duration), or None."""
        return self._single("time")

    @property
    def event_column(self) -> str | None:
        """The column with role ``event`` (1 event, 0 censored), or None."""
        return self._single("event")

    @property
    def group_column(self) -> str | None:
        """The column with role ``group`` (a patient or lesion; splits never cut one), or None."""
        return self._single("group")

    @property
    def split_column(self) -> str | None:
        """The column with role ``split`` (train/val/test), or None."""
        return self._single("split")

    def columns_with(self, *roles: str) -> list[str]:
        """Columns whose role is one of ``roles``, in manifest column order."""
        for role in roles:
            if role not in ROLES:
                raise ValueError(_unknown(role, ROLES, "role"))
        return [c for c, r in self.columns.items() if r in roles]

    @property
    def modalities(self) -> list[str]:
        """Modalities of ``MODALITY_ORDER`` that have at least one column, in that order."""
        return [m for m in MODALITY_ORDER if self.columns_with(*_MODALITY_ROLES[m])]

    def modality_columns(self, modality: str) -> list[str]:
        """Columns that feed ``modality`` (``"tabular"`` -> numeric and categorical columns)."""
        if modality not in _MODALITY_ROLES:
            raise ValueError(_unknown(modality, MODALITY_ORDER, "modality"))
        return self.columns_with(*_MODALITY_ROLES[modality])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for YAML/JSON; ``from_dict`` reads it back."""
        return {
            "schema_version": self.schema_version,
            "task": self.task,
            "columns": dict(self.columns),
            "classes": None if self.classes is None else list(self.classes),
            "categories": {c: list(v) for c, v in self.categories.items()},
            "shapes": {c: list(v) for c, v in self.shapes.items()},
        }

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "schema") -> Schema:
        """Build a schema from ``to_dict`` output (or a hand-written ``schema.yaml``).

        ``schema_version`` and ``columns`` are required; ``task``, ``classes``, ``categories``
        and ``shapes`` may be left out. Class and category names are read as strings.

        Args:
            d: the mapping to read.
            source: named in every error, e.g. the path of ``schema.yaml``.

        Raises:
            SchemaError: on a missing or unknown key, an unknown role or task, or a wrong version.
        """
        if not isinstance(d, Mapping):
            raise SchemaError(source, [(None, f"expected a mapping with keys {', '.join(_KEYS)}, found {type(d).__name__}")])
        problems: list[tuple[str | None, str]] = []
        for key in _REQUIRED_KEYS:
            if key not in d:
                hint = f" (write 'schema_version: {SCHEMA_VERSION}')" if key == "schema_version" else ""
                problems.append((key, f"missing required key{hint}"))
        for key in d:
            if key not in _KEYS:
                problems.append((str(key), _unknown(key, _KEYS, "key")))
        columns, categories, shapes = d.get("columns"), d.get("categories") or {}, d.get("shapes") or {}
        classes = d.get("classes")
        if columns is not None and not isinstance(columns, Mapping):
            problems.append(("columns", "expected a mapping of column name -> role"))
        if not isinstance(categories, Mapping):
            problems.append(("categories", "expected a mapping of column name -> list of values"))
        if not isinstance(shapes, Mapping):
            problems.append(("shapes", "expected a mapping of column name -> [C, H, W]"))
        if classes is not None and not isinstance(classes, list):
            problems.append(("classes", "expected a list of class names"))
        if problems:
            raise SchemaError(source, problems)
        for col, values in categories.items():
            if not isinstance(values, list):
                problems.append((f"categories.{col}", "expected a list of values"))
        for col, shape in shapes.items():
            if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
                problems.append((f"shapes.{col}", f"expected a list of integers, found {shape!r}"))
        if problems:
            raise SchemaError(source, problems)
        try:
            return cls(
                columns={str(c): str(r) for c, r in columns.items()} if columns else {},
                task=d.get("task"),
                classes=None if classes is None else [_as_name(v) for v in classes],
                categories={str(c): [_as_name(v) for v in vals] for c, vals in categories.items()},
                shapes={str(c): list(s) for c, s in shapes.items()},
                schema_version=d["schema_version"],
            )
        except SchemaError as err:
            raise SchemaError(source, err.problems) from None

    def save(self, path: str | Path) -> None:
        """Write the schema as YAML, atomically (a temp file in the same folder, then ``os.replace``)."""
        path = Path(path)
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        """Read a schema written by ``save`` or by hand.

        Raises:
            SchemaError: naming the file when it is missing, not YAML, or not a valid schema.
        """
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SchemaError(source, [(None, "file not found")]) from None
        except (OSError, UnicodeDecodeError) as err:
            raise SchemaError(source, [(None, f"cannot read the file ({err})")]) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or "invalid syntax"
            raise SchemaError(source, [(None, f"not valid YAML{where}: {problem}")]) from None
        if data is None:
            raise SchemaError(source, [(None, "file is empty; expected keys schema_version and columns")])
        return cls.from_dict(data, source=source)


def _as_name(value: Any) -> str:
    """YAML reads ``classes: [0, 1]`` as ints; manifests hold strings, so compare as strings."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)
