"""Tests for client/role_inference.py: a column's role by name or by the more-than-half rule,
and the task from the labels."""

from __future__ import annotations

import pandas as pd
import pytest

from client.role_inference import infer_role, infer_schema, infer_task, sort_classes
from client.schema import Schema


def _table(**columns: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(columns, dtype=object)


# (column name, cells, expected role)
ROLE_CASES = [
    ("sample_id", ["a", "b"], "id"),
    ("label", ["0", "1"], "label"),
    ("time", ["1.5", "3"], "time"),
    ("event", ["0", "1"], "event"),
    ("group_id", ["p1", "p1"], "group"),
    ("split", ["train", "test"], "split"),
    ("scan", ["a/1.png", "a/2.PNG"], "image"),
    ("photo", ["x.jpg", "y.jpeg"], "image"),
    ("mri", ["x.nii.gz", None, "y.nii"], "image"),
    ("image_npy", ["x.npy", "y.npy"], "image"),
    ("ecg", ["x.npy", "y.npy"], "series"),
    ("trace", ["x.csv", None], "series"),
    ("age", ["34", "-1.5e2", None], "numeric"),
    ("bmi", ["22.5", "nan"], "numeric"),  # nan is reported by validation, not demoted to categorical
    ("sex", ["F", "M", None], "categorical"),
    ("mixed", ["1", "two"], "categorical"),
    ("empty", [None, None], "ignore"),
    ("img_path", [None, None], "image"),
]


@pytest.mark.parametrize(("name", "cells", "role"), ROLE_CASES, ids=[c[0] for c in ROLE_CASES])
def test_infer_schema_roles(name: str, cells: list[str | None], role: str) -> None:
    schema = infer_schema(_table(**{name: cells}), source="site.csv")
    assert schema.columns == {name: role}


def test_infer_schema_keeps_column_order() -> None:
    table = _table(label=["0", "1"], age=["1", "2"], sample_id=["a", "b"])
    assert list(infer_schema(table, source="s.csv").columns) == ["label", "age", "sample_id"]


# (labels, expected task)
TASK_CASES = [
    (["yes", "no", "yes"], "binary"),
    (["a", "b", "c"], "multiclass"),
    (["0", "1", "1"], "binary"),
    (["0", "1", "2", None], "multiclass"),
    (["1.0", "2.0", "3.0"], "multiclass"),
    (["0.5", "1.25", "3"], "regression"),
    ([str(i) for i in range(25)], "regression"),
    (["only"], "binary"),
    (["0.5", "1.25", "3", "2.5", "high"], "regression"),  # the stray label is reported by validation
    (["0", "1", "1", "n/a"], "binary"),
    (["1.5", "x", "y"], "multiclass"),
]


@pytest.mark.parametrize(("labels", "task"), TASK_CASES)
def test_infer_task_from_labels(labels: list[str | None], task: str) -> None:
    schema = Schema(columns={"sample_id": "id", "label": "label"})
    table = _table(sample_id=[str(i) for i in range(len(labels))], label=labels)
    assert infer_task(schema, table) == task


def test_infer_task_survival_and_overrides() -> None:
    table = _table(sample_id=["a", "b"], time=["1", "2"], event=["0", "1"], label=["x", "y"])
    survival = Schema(columns={"sample_id": "id", "time": "time", "event": "event", "label": "label"})
    assert infer_task(survival, table) == "survival"
    forced = Schema(columns={"sample_id": "id", "label": "label"}, task="multiclass")
    assert infer_task(forced, table) == "multiclass"
    by_classes = Schema(columns={"sample_id": "id", "label": "label"}, classes=["x", "y", "z"])
    assert infer_task(by_classes, table) == "multiclass"


def test_infer_task_without_label_raises() -> None:
    with pytest.raises(ValueError, match="label"):
        infer_task(Schema(columns={"sample_id": "id"}), _table(sample_id=["a"]))


# (spellings, role): "more than half" of the cells that are not a missing-value spelling
MOST_CASES = [
    (["1", "2", "3", "x"], "numeric"),
    (["1", "x"], "categorical"),
    (["1", "x", "y"], "categorical"),
    (["1", "2", "n/a", "NA", "-"], "numeric"),
    (["n/a", "NA"], "ignore"),
    (["a.png", "b.png", "none"], "image"),
]


@pytest.mark.parametrize(("cells", "role"), MOST_CASES)
def test_the_more_than_half_rule(cells: list[str], role: str) -> None:
    assert infer_role("col", pd.Series(cells, dtype=object)) == role


def test_classes_sort_numbers_numerically_then_names() -> None:
    assert sort_classes(["10", "2", "b", "a", "2"]) == ["2", "10", "a", "b"]
