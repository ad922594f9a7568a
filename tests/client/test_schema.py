"""Tests for client/schema.py: roles, schema.yaml round trip and rejection."""

from __future__ import annotations

import pytest

from client.schema import MODALITY_ORDER, ROLES, Schema, SchemaError


FULL = Schema(
    columns={
        "sample_id": "id",
        "label": "label",
        "group_id": "group",
        "age": "numeric",
        "sex": "categorical",
        "ct": "image",
        "ecg": "series",
        "gene_a": "omics",
        "gene_b": "omics",
        "note": "ignore",
    },
    task="binary",
    classes=["benign", "malignant"],
    categories={"sex": ["F", "M"]},
    shapes={"ct": [1, 8, 8]},
)


def test_roundtrip_yaml(tmp_path) -> None:
    path = tmp_path / "schema.yaml"
    FULL.save(path)
    assert Schema.load(path) == FULL
    assert Schema.from_dict(FULL.to_dict()) == FULL
    assert [p.name for p in tmp_path.iterdir()] == ["schema.yaml"]  # no temp file left behind


def test_save_replaces_existing(tmp_path) -> None:
    path = tmp_path / "schema.yaml"
    FULL.save(path)
    small = Schema(columns={"sample_id": "id", "label": "label"})
    small.save(path)
    assert Schema.load(path) == small


def test_from_dict_reads_numbers_as_names() -> None:
    d = {"schema_version": 1, "columns": {"sample_id": "id", "label": "label"}, "classes": [0, 1]}
    assert Schema.from_dict(d).classes == ["0", "1"]


def _with(**changes: object) -> dict:
    d = FULL.to_dict()
    for key, value in changes.items():
        if value is None:
            del d[key]
        else:
            d[key] = value
    return d


# (mapping, key the error must name, text it must contain)
BAD_DICTS = [
    (_with(columns=None), "columns", "missing required key"),
    (_with(schema_version=None), "schema_version", "missing required key"),
    (_with(schema_version=2), "schema_version", "not supported"),
    (_with(task="survial"), "task", "did you mean 'survival'"),
    (_with(columns={"sample_id": "id", "age": "numerc"}, categories={}, shapes={}), "columns.age", "did you mean 'numeric'"),
    ({**FULL.to_dict(), "colums": {}}, "colums", "unknown key"),
    (_with(categories={"age": ["a"]}), "categories.age", "categorical"),
    (_with(shapes={"ct": [8, 8]}), "shapes.ct", "[C, H, W]"),
    (_with(shapes={"ct": "3x8x8"}), "shapes.ct", "list of integers"),
    (_with(classes=["a", "a"]), "classes", "unique"),
    (_with(columns={"a": "id", "b": "id"}, categories={}, shapes={}), "columns", "at most one"),
]


@pytest.mark.parametrize(("d", "key", "text"), BAD_DICTS, ids=[f"{c[1]}-{c[2]}" for c in BAD_DICTS])
def test_from_dict_rejects(d: dict, key: str, text: str) -> None:
    with pytest.raises(SchemaError) as info:
        Schema.from_dict(d, source="sites/schema.yaml")
    message = str(info.value)
    assert message.startswith("sites/schema.yaml: ")
    assert f"key {key!r}" in message
    assert text in message


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(SchemaError, match="cfg.yaml: expected a mapping"):
        Schema.from_dict(["columns"], source="cfg.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "file not found"),
        ("", "file is empty"),
        ("columns: [unclosed\n", "not valid YAML at line"),
        ("schema_version: 1\ncolumns: {sample_id: idd}\n", "unknown role 'idd'"),
    ],
)
def test_load_errors_name_the_file(tmp_path, text: str | None, expected: str) -> None:
    path = tmp_path / "schema.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SchemaError) as info:
        Schema.load(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_columns_and_modalities() -> None:
    assert FULL.columns_with("omics") == ["gene_a", "gene_b"]
    assert FULL.columns_with("id", "label") == ["sample_id", "label"]
    assert FULL.modalities == list(MODALITY_ORDER)
    assert FULL.modality_columns("tabular") == ["age", "sex"]
    assert FULL.modality_columns("image") == ["ct"]
    assert Schema(columns={"sample_id": "id", "x": "numeric"}).modalities == ["tabular"]
    with pytest.raises(ValueError, match="did you mean 'omics'"):
        FULL.modality_columns("omic")
    with pytest.raises(ValueError, match="unknown role"):
        FULL.columns_with("pixels")


def test_constructor_validates() -> None:
    with pytest.raises(SchemaError, match="columns.x"):
        Schema(columns={"x": "pixels"})
    assert set(ROLES) >= set(FULL.columns.values())
