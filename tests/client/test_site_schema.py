"""Tests for client/site_schema.py through ``read_manifest_folder``: roles declared or inferred
over all sites, stray cells, columns that differ between sites, rare classes, per-site ids,
and the printed summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from client.manifest import ManifestError, Problem, read_manifest, read_manifest_folder
from client.schema import Schema
from client.site_schema import MIN_ONE_SITE_SAMPLES, describe_sites

SITES = {"north": 30, "south": 24, "east": 18}


def _sites(folder: Path, *, sites: dict[str, int] = SITES, schema: str | None = None, seed: int = 0) -> dict[str, Path]:
    """Tabular sites whose ids all run 1..n (they overlap), labels 0/1 at every site."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for site, n in sites.items():
        frame = pd.DataFrame({
            "sample_id": [str(i) for i in range(1, n + 1)],
            "label": [str(i % 2) for i in range(n)],
            "chol": [f"{v:.1f}" for v in rng.normal(200, 30, n)],
            "sex": rng.choice(["F", "M"], n),
        })  # fmt: skip
        paths[site] = folder / f"{site}.csv"
        frame.to_csv(paths[site], index=False)
    if schema is not None:
        (folder / "schema.yaml").write_text(schema)
    return paths


def _edit(path: Path, changes: dict[tuple[int, str], str]) -> None:
    """Set cells by (data row index, column); row index i is spreadsheet row i + 2."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for (i, col), value in changes.items():
        frame.loc[i, col] = value
    frame.to_csv(path, index=False)


def _problems(folder: Path) -> list[Problem]:
    with pytest.raises(ManifestError) as info:
        read_manifest_folder(folder)
    return info.value.problems


def _at(problems: list[Problem], path: Path, row: int | None, column: str) -> list[str]:
    return [p.message for p in problems if p.file == str(path) and p.row == row and p.column == column]


def test_ids_are_unique_within_a_site_not_across_sites(tmp_path: Path) -> None:
    paths = _sites(tmp_path)
    manifests = read_manifest_folder(tmp_path)
    assert [m.table["sample_id"].iloc[0] for m in manifests] == ["1", "1", "1"]
    _edit(paths["south"], {(9, "sample_id"): "4"})
    problems = _problems(tmp_path)
    assert len(problems) == 1
    message = _at(problems, paths["south"], 11, "sample_id")[0]
    assert "duplicate id '4', first used in row 5" in message and "unique within a site" in message


# (cell written into one site's numeric column, text the cell's problem must contain)
STRAYS = [
    ("high", "expected a number, found 'high'"),
    ("n/a", "an empty cell is the only missing value"),
    ("NA", "leave the cell empty"),
    ("\u2014", "leave the cell empty"),
    ("?", "leave the cell empty"),
    ("12,5", "a point as the decimal separator"),
    ("1,000", "no thousands separator"),
    (">90", "a bound is not a value"),
    ("<= 5", "a bound is not a value"),
    ("12 mg", "without its unit"),
]


@pytest.mark.parametrize(("value", "text"), STRAYS, ids=[s[0] for s in STRAYS])
def test_a_stray_cell_in_a_numeric_column_is_reported_not_a_new_category(tmp_path: Path, value: str, text: str) -> None:
    paths = _sites(tmp_path)
    _edit(paths["east"], {(4, "chol"): value})
    problems = _problems(tmp_path)
    assert text in _at(problems, paths["east"], 6, "chol")[0]
    assert all(p.file == str(paths["east"]) for p in problems)


def test_text_strays_get_the_schema_fix(tmp_path: Path) -> None:
    paths = _sites(tmp_path)
    _edit(paths["east"], {(4, "chol"): "high", (7, "chol"): "low"})
    _edit(paths["north"], {(0, "chol"): "n/a"})
    problems = _problems(tmp_path)
    summary = _at(problems, paths["east"], None, "chol")[0]
    assert "read as numeric" in summary and "rows 6, 9" in summary and "'chol: categorical'" in summary
    assert _at(problems, paths["north"], None, "chol") == []  # a missing-value spelling is no sign of categories
    assert len(_at(problems, paths["north"], 2, "chol")) == 1


def test_a_column_numeric_at_one_site_and_text_at_another_is_reported(tmp_path: Path) -> None:
    paths = _sites(tmp_path)
    frame = pd.read_csv(paths["south"], dtype=str)
    frame["sex"] = (frame["sex"] == "M").astype(int).astype(str)  # 0/1 here, F/M elsewhere
    frame.to_csv(paths["south"], index=False)
    problems = _problems(tmp_path)
    assert [p.file for p in problems] == [str(paths["south"])]
    message = _at(problems, paths["south"], None, "sex")[0]
    assert "holds numbers here" in message and "text at" in message and "east.csv" in message
    assert "'sex: numeric'" in message


def test_a_stray_site_of_text_in_a_numeric_column_is_reported_row_by_row(tmp_path: Path) -> None:
    paths = _sites(tmp_path, sites={"north": 30, "south": 30, "east": 6})
    frame = pd.read_csv(paths["east"], dtype=str)
    frame["chol"] = ["high", "low", "normal", "high", "low", "normal"]
    frame.to_csv(paths["east"], index=False)
    problems = _problems(tmp_path)
    assert len([p for p in problems if p.file == str(paths["east"]) and p.row is not None]) == 6


def test_declared_roles_win_over_inference(tmp_path: Path) -> None:
    paths = _sites(tmp_path, schema="schema_version: 1\ncolumns:\n  chol: categorical\n")
    _edit(paths["east"], {(4, "chol"): "high"})
    manifests = read_manifest_folder(tmp_path)
    expected = {"sample_id": "id", "label": "label", "chol": "categorical", "sex": "categorical"}
    assert manifests[0].schema.columns == expected
    assert manifests[0].inferred.columns == ("sample_id", "label", "sex")


def test_a_rare_class_at_one_site_stops_the_run(tmp_path: Path) -> None:
    paths = _sites(tmp_path)
    _edit(paths["south"], {(3, "label"): "7", (8, "label"): "7"})
    problems = _problems(tmp_path)
    assert len(problems) == 1
    message = _at(problems, paths["south"], None, "label")[0]
    assert "class '7' in rows 5, 10" in message and "2 sample(s)" in message
    assert "classes: [0, 1, 7]" in message and "correct the cell" in message


def test_a_class_at_one_site_only_needs_enough_samples_there(tmp_path: Path) -> None:
    paths = _sites(tmp_path)
    few = {(i, "label"): "2" for i in range(MIN_ONE_SITE_SAMPLES - 1)}
    _edit(paths["north"], few)
    message = _at(_problems(tmp_path), paths["north"], None, "label")[0]
    assert f"at one site only needs at least {MIN_ONE_SITE_SAMPLES}" in message
    _edit(paths["north"], {**few, (MIN_ONE_SITE_SAMPLES - 1, "label"): "2"})
    assert read_manifest_folder(tmp_path)[0].task == "multiclass"


def test_a_rare_class_spread_over_sites_is_reported_in_each_file(tmp_path: Path) -> None:
    paths = _sites(tmp_path)
    _edit(paths["north"], {(0, "label"): "unsure"})
    _edit(paths["east"], {(2, "label"): "unsure"})
    problems = _problems(tmp_path)
    assert "at 2 sites" in _at(problems, paths["north"], None, "label")[0]
    assert "class 'unsure' in row 4" in _at(problems, paths["east"], None, "label")[0]


def test_a_stray_word_among_regression_labels_is_reported(tmp_path: Path) -> None:
    paths = _sites(tmp_path)
    for path in paths.values():
        frame = pd.read_csv(path, dtype=str)
        frame["label"] = frame["chol"]
        frame.to_csv(path, index=False)
    _edit(paths["north"], {(6, "label"): "high"})
    problems = _problems(tmp_path)
    assert [(p.row, p.column) for p in problems] == [(8, "label")]
    assert "expected a number, found 'high'" in problems[0].message


def test_declared_classes_are_honoured_and_bound_the_labels(tmp_path: Path) -> None:
    paths = _sites(tmp_path, schema="schema_version: 1\ncolumns: {}\nclasses: [0, 1, 7]\n")
    _edit(paths["south"], {(3, "label"): "7"})
    manifests = read_manifest_folder(tmp_path)
    assert manifests[0].task == "multiclass" and manifests[0].schema.classes == ["0", "1", "7"]
    _edit(paths["south"], {(3, "label"): "8"})
    message = _at(_problems(tmp_path), paths["south"], 5, "label")[0]
    assert "label '8' is not one of the known classes: 0, 1, 7" in message


# (role, canonical name, renamed) for every single-column role
RENAMED = [("id", "sample_id", "pid"), ("label", "label", "diagnosis"), ("group", "group_id", "patient"),
           ("split", "split", "fold")]  # fmt: skip


@pytest.mark.parametrize(("role", "canonical", "renamed"), RENAMED)
def test_a_role_under_another_name(tmp_path: Path, role: str, canonical: str, renamed: str) -> None:
    paths = _sites(tmp_path, schema=f"schema_version: 1\ncolumns:\n  {renamed}: {role}\n")
    for path in paths.values():
        frame = pd.read_csv(path, dtype=str)
        frame["group_id"] = [f"p{i // 2}" for i in range(len(frame))]
        frame["split"] = ["train", "train", "val", "test"] * (len(frame) // 4) + ["train"] * (len(frame) % 4)
        frame.rename(columns={canonical: renamed}).to_csv(path, index=False)
    manifests = read_manifest_folder(tmp_path)
    schema = manifests[0].schema
    assert getattr(schema, f"{role}_column") == renamed and canonical not in schema.columns
    assert manifests[0].task == "binary"
    assert manifests[0].split_mask("val").sum() == 4  # east: from the split column, whatever its name


def test_a_column_named_like_a_role_given_to_another_is_reported(tmp_path: Path) -> None:
    paths = _sites(tmp_path, schema="schema_version: 1\ncolumns:\n  target: label\n")
    for path in paths.values():
        frame = pd.read_csv(path, dtype=str)
        frame["target"] = frame["label"]
        frame.to_csv(path, index=False)
    problems = _problems(tmp_path)
    message = _at(problems, paths["east"], 1, "label")[0]
    assert "gives role 'label' to 'target'" in message and "'label: ignore'" in message


def test_survival_roles_under_other_names(tmp_path: Path) -> None:
    rows = [[str(i), str(10.0 * i), str(i % 2), str(40 + i)] for i in range(1, 13)]
    for site in ("a", "b"):
        pd.DataFrame(rows, columns=["pid", "days", "died", "age"]).to_csv(tmp_path / f"{site}.csv", index=False)
    (tmp_path / "schema.yaml").write_text("schema_version: 1\ncolumns: {pid: id, days: time, died: event}\n")
    manifests = read_manifest_folder(tmp_path)
    assert manifests[0].task == "survival" and manifests[0].schema.time_column == "days"
    _edit(tmp_path / "b.csv", {(2, "died"): "yes"})
    assert "event must be 0 (censored) or 1 (event)" in _at(_problems(tmp_path), tmp_path / "b.csv", 4, "died")[0]


def test_a_schema_for_one_manifest_may_be_partial(tmp_path: Path) -> None:
    paths = _sites(tmp_path, sites={"north": 12})
    frame = pd.read_csv(paths["north"], dtype=str).rename(columns={"label": "target"})
    frame.to_csv(paths["north"], index=False)
    manifest = read_manifest(paths["north"], schema=Schema(columns={"target": "label"}))
    assert manifest.schema.label_column == "target" and manifest.schema.columns["chol"] == "numeric"


def test_describe_sites_names_roles_task_and_classes_per_site(tmp_path: Path) -> None:
    _sites(tmp_path, schema="schema_version: 1\ncolumns:\n  sample_id: id\n")
    manifests = read_manifest_folder(tmp_path)
    m = manifests[0]
    text = describe_sites(m.schema, m.task, [(x.site, x.table) for x in manifests], inferred=m.inferred)
    lines = text.splitlines()
    assert "  id           sample_id" in lines and "  numeric      chol*" in lines
    assert "task: binary (inferred from the labels)" in lines
    assert lines[lines.index("classes (from the labels), per site:") + 1].split() == ["class", "east", "north", "south"]
    assert "  0         9     15     12" in lines
    assert len(lines) <= 14


def test_a_vocabulary_declares_its_column_categorical(tmp_path: Path) -> None:
    paths = _sites(tmp_path, schema="schema_version: 1\ncolumns: {}\ncategories: {chol: [low, high], smoker: [no, yes]}\n")
    problems = _problems(tmp_path)
    assert any(p.column == "chol" and "is not one of the known values: low, high" in p.message for p in problems)
    missing = _at(problems, paths["north"], 1, "smoker")[0]
    assert "role 'categorical'" in missing and "is missing" in missing
