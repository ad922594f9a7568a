"""The one schema of a folder of sites: the roles ``schema.yaml`` declares, the rest inferred
over every site's cells; columns whose cells disagree and rare inferred classes reported as
``Problem`` s; and the whole described in a few lines before training.

Rules (the README's "Your own sites" states them for users):

- A column takes the role schema.yaml gives it. Otherwise a column named like a role
  (``CANONICAL_NAMES``) takes that role, unless schema.yaml gave the role to another
  column (then it must be declared too). Every other column's role is inferred from the
  cells of all sites together by the "more than half" rule of ``client.role_inference.infer_role``.
- A column read as numeric whose other cells are text is reported at every file holding
  such cells (validation names each cell); a column numeric at some sites and text at
  others is reported at the numeric sites. Neither is resolved silently.
- With inferred classes, a class with fewer than ``MIN_CLASS_SAMPLES`` samples over all
  sites, or found at one site only with fewer than ``MIN_ONE_SITE_SAMPLES``, is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from client.manifest_checks import Problem
from client.role_inference import cell_kinds, infer_role, non_empty_cells, sort_classes
from client.schema import CANONICAL_NAMES, SINGLE_ROLES, Schema, SchemaError

__all__ = [
    "Inferred",
    "MIN_CLASS_SAMPLES",
    "MIN_ONE_SITE_SAMPLES",
    "rare_class_rule",
    "rare_classes_of_counts",
    "SCHEMA_FILE",
    "resolve_schema",
    "check_classes",
    "describe_sites",
]

SCHEMA_FILE = "schema.yaml"
#: One sample each for train, val and test: a class with fewer can be learnt or measured, not both.
MIN_CLASS_SAMPLES = 3
#: A class found at one site only with fewer samples is more likely a typo than a class:
#: with the default 15% val / 20% test it expects under 2 samples in each of them.
MIN_ONE_SITE_SAMPLES = 10
_FIRST_ROW = 2
_SHOWN_ROWS = 8
_BY_NAME = {name: role for role, name in CANONICAL_NAMES.items()}


@dataclass(frozen=True)
class Inferred:
    """What was inferred from the cells rather than given (by schema.yaml or the caller).

    Args:
        columns: columns whose role was inferred.
        task: whether the task was inferred from the labels.
        classes: whether the classes were taken from the labels.
    """

    columns: tuple[str, ...] = ()
    task: bool = False
    classes: bool = False


def _rows(index: pd.Index) -> str:
    """Spreadsheet rows of DataFrame ``index`` values: ``rows 4, 9`` (capped)."""
    rows = [str(int(i) + _FIRST_ROW) for i in index]
    shown = ", ".join(rows[:_SHOWN_ROWS])
    more = f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _declare(column: str, role: str) -> str:
    return f"'{column}: {role}' under 'columns:' in {SCHEMA_FILE}"


def _mixed_cells(column: str, cells: dict[str, pd.Series], role: str) -> list[Problem]:
    """Problems of an inferred numeric/categorical column whose cells are of both kinds."""
    numbers: dict[str, pd.Series] = {}
    text: dict[str, pd.Series] = {}
    for file, values in cells.items():
        is_number, is_missing = cell_kinds(values)
        numbers[file], text[file] = values[is_number], values[~is_number & ~is_missing]
    n_numbers, n_text = sum(len(v) for v in numbers.values()), sum(len(v) for v in text.values())
    if n_numbers == 0 or n_text == 0:
        return []
    if role == "numeric":
        total = n_numbers + n_text
        return [
            Problem(file, None, column, f"read as numeric because {n_numbers} of its {total} non-empty cells over "
                    f"all sites are numbers, but {_rows(values.index)} here hold text (e.g. {values.iat[0]!r}); correct "
                    f"those cells, or if the column holds categories, declare {_declare(column, 'categorical')}")
            for file, values in text.items() if len(values)
        ]  # fmt: skip
    numeric_sites = [f for f in cells if len(numbers[f]) > len(text[f])]
    text_sites = [f for f in cells if len(text[f]) >= len(numbers[f]) and len(text[f])]
    if not numeric_sites or not text_sites:
        return []  # a few numbers among text are categories like any other value
    example = text[text_sites[0]]
    where = f"{text_sites[0]} (e.g. {example.iat[0]!r} in {_rows(example.index[:1])})"
    others = f" and {len(text_sites) - 1} other file(s)" if len(text_sites) > 1 else ""
    return [
        Problem(file, None, column, f"holds numbers here ({_rows(numbers[file].index)}) but text at {where}{others}; "
                "a column must mean the same at every site: recode the cells so that every site writes the same "
                f"values, and declare the role ({_declare(column, 'numeric')}, or 'categorical')")
        for file in numeric_sites
    ]  # fmt: skip


def resolve_schema(
    tables: Sequence[tuple[str, pd.DataFrame]], declared: Schema | None = None, *, declared_source: str = SCHEMA_FILE
) -> tuple[Schema | None, list[Problem], Inferred]:
    """The schema of these manifests: ``declared`` roles, the rest inferred over all tables.

    Columns are the first table's, in its order, then declared columns it lacks (validation
    reports a column missing from a manifest, or one the schema does not know).

    Args:
        tables: ``(file as the user named it, cells)`` per manifest; at least one.
        declared: what schema.yaml (or the caller) gives; its task, classes, vocabularies and
            shapes are kept. A vocabulary makes its column categorical, a shape makes it image.
        declared_source: how ``declared`` is named in problems.

    Returns:
        The schema (None when it cannot be built), the problems, and what was inferred.
    """
    declared = declared or Schema(columns={})
    given = dict(declared.columns)
    given.update({c: "categorical" for c in declared.categories if c not in given})
    given.update({c: "image" for c in declared.shapes if c not in given})
    holder = {role: col for col, role in given.items() if role in SINGLE_ROLES}
    first_file, first = tables[0]
    problems: list[Problem] = []
    columns: dict[str, str] = {}
    inferred: list[str] = []
    for col in [*map(str, first.columns), *(c for c in given if c not in first.columns)]:
        if col in given:
            columns[col] = given[col]
            continue
        inferred.append(col)
        role = _BY_NAME.get(col)
        if role is not None and role in holder:
            problems.append(Problem(first_file, 1, col, f"named like a {role!r} column, but {declared_source} gives "
                                    f"role {role!r} to {holder[role]!r}; declare this column's role too, e.g. "
                                    f"{_declare(col, 'ignore')}"))  # fmt: skip
            columns[col] = "ignore"
            continue
        if role is not None:
            columns[col] = role
            continue
        cells = {file: non_empty_cells(table[col]) for file, table in tables if col in table.columns}
        columns[col] = infer_role(col, pd.concat(list(cells.values())))
        if columns[col] in ("numeric", "categorical"):
            problems += _mixed_cells(col, cells, columns[col])
    try:
        schema = Schema(columns=columns, task=declared.task, classes=declared.classes,
                        categories=declared.categories, shapes=declared.shapes)  # fmt: skip
    except SchemaError as err:
        problems += [Problem(declared_source, None, None, f"key {k!r}: {m}" if k else m) for k, m in err.problems]
        return None, problems, Inferred(columns=tuple(inferred))
    inferred_all = Inferred(columns=tuple(inferred), task=declared.task is None, classes=declared.classes is None)
    return schema, problems, inferred_all


def _label_cells(tables: Sequence[tuple[str, pd.DataFrame]], schema: Schema) -> dict[str, pd.Series]:
    col = schema.label_column
    if col is None:
        return {}
    return {file: non_empty_cells(table[col]) for file, table in tables if col in table.columns}


def rare_class_rule(total: int, *, sites_with: int, sites: int) -> str | None:
    """What a class seen ``total`` times at ``sites_with`` of ``sites`` sites lacks, or None if it is fine."""
    if total < MIN_CLASS_SAMPLES:
        return f"a class needs at least {MIN_CLASS_SAMPLES} (one each for train, val and test)"
    if sites > 1 and sites_with == 1 and total < MIN_ONE_SITE_SAMPLES:
        return f"a class found at one site only needs at least {MIN_ONE_SITE_SAMPLES}"
    return None


def rare_classes_of_counts(counts: dict[str, dict[str, int]]) -> list[str]:
    """The rare-class rule over label counts per site (the federated statistics round: no rows leave a site).

    Args:
        counts: site -> {label: samples at that site}.

    Returns:
        One message per rare class, naming its sites and counts and the fix.
    """
    by_label: dict[str, dict[str, int]] = {}
    for site, labels in counts.items():
        for label, n in labels.items():
            if n > 0:
                by_label.setdefault(str(label), {})[site] = int(n)
    known = sort_classes(by_label)
    out = []
    for label in known:
        where = by_label[label]
        need = rare_class_rule(sum(where.values()), sites_with=len(where), sites=len(counts))
        if need is not None:
            at = ", ".join(f"{site} {n}" for site, n in sorted(where.items()))
            out.append(f"class {label!r}: {sum(where.values())} sample(s) over all sites ({at}); {need}; correct the "
                       f"cells if {label!r} is a mistake, or declare the classes in every site's {SCHEMA_FILE} "
                       f"(classes: [{', '.join(known)}])")  # fmt: skip
    return out


def check_classes(tables: Sequence[tuple[str, pd.DataFrame]], schema: Schema, task: str | None) -> list[Problem]:
    """Rare inferred classes, one problem per file holding them (see the module rules).

    Declared classes (``schema.classes``) are never judged here: validation reports a label
    outside them instead.
    """
    if task not in ("binary", "multiclass") or schema.classes is not None:
        return []
    labels = _label_cells(tables, schema)
    rows: dict[str, dict[str, pd.Index]] = {}
    for file, values in labels.items():
        for value, index in values.groupby(values).groups.items():
            rows.setdefault(str(value), {})[file] = pd.Index(index)
    known = sort_classes(rows)
    problems = []
    for value in known:
        by_file = rows[value]
        total = sum(len(index) for index in by_file.values())
        need = rare_class_rule(total, sites_with=len(by_file), sites=len(labels))
        if need is None:
            continue
        fix = (f"correct the cell(s) if {value!r} is a mistake, or if it is a real class declare the classes "
               f"in {SCHEMA_FILE} (classes: [{', '.join(known)}])")  # fmt: skip
        for file, index in by_file.items():
            where = "here only" if len(by_file) == 1 else f"at {len(by_file)} sites"
            problems.append(Problem(file, None, schema.label_column, f"class {value!r} in {_rows(index)}: {total} "
                                    f"sample(s) over all sites ({where}); {need}; {fix}"))  # fmt: skip
    return problems


def describe_sites(
    schema: Schema, task: str, tables: Sequence[tuple[str, pd.DataFrame]], *, inferred: Inferred | None = None
) -> str:
    """The schema in a few lines: each column's role, the task, the classes (events for
    survival) with their counts per site, and what was inferred rather than declared.

    Args:
        schema: the schema the sites are read with.
        task: the run's task.
        tables: ``(site, cells)`` per site.
        inferred: what was inferred; None when everything was declared.
    """
    inferred = inferred or Inferred()
    mark = {c: "*" for c in inferred.columns}
    by_role: dict[str, list[str]] = {}
    for col, role in schema.columns.items():
        by_role.setdefault(role, []).append(col + mark.get(col, ""))
    width = max(len(r) for r in by_role)
    lines = ["columns by role (* = inferred from the cells or the name; the rest declared):"]
    lines += [f"  {role:<{width}}  {', '.join(cols)}" for role, cols in by_role.items()]
    lines.append(f"task: {task}{' (inferred from the labels)' if inferred.task else ''}")
    sites = [site for site, _ in tables]
    if task in ("binary", "multiclass") and schema.label_column:
        labels = _label_cells(tables, schema)
        classes = schema.classes or sort_classes(v for values in labels.values() for v in values)
        counts = {s: labels.get(s, pd.Series(dtype=object)).value_counts() for s in sites}
        title = "classes (from the labels)" if inferred.classes else "classes (declared)"
        rows = [[c] + [str(int(counts[s].get(c, 0))) for s in sites] for c in classes]
        lines += _table(title, ["class", *sites], rows)
    elif task == "survival" and schema.event_column:
        col = schema.event_column
        events = {s: pd.to_numeric(t[col], errors="coerce") for s, t in tables}
        rows = [["events"] + [str(int((events[s] == 1).sum())) for s in sites],
                ["censored"] + [str(int((events[s] == 0).sum())) for s in sites]]  # fmt: skip
        lines += _table("outcomes", ["", *sites], rows)
    lines.append(f"samples per site: {', '.join(f'{s} {len(t)}' for s, t in tables)}")
    if inferred.columns or inferred.task or inferred.classes:
        lines.append(f"To correct any of it, declare the role, task or classes in a {SCHEMA_FILE} beside the manifests.")
    return "\n".join(lines)


def _table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]

    def line(cells: list[str]) -> str:
        # First column left-aligned (names), counts right-aligned.
        return "  " + "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths)))

    return [f"{title}, per site:", line(header), *[line(r) for r in rows]]

