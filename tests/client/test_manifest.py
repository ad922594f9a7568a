"""Tests for client/manifest.py: a good manifest, every bad input, folders, warnings, speed."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.manifest import Manifest, ManifestError, Problem, read_manifest, read_manifest_folder
from client.schema import Schema

HEADER = ["sample_id", "label", "age", "sex", "image", "split"]
SCHEMA = Schema(
    columns={
        "sample_id": "id",
        "label": "label",
        "age": "numeric",
        "sex": "categorical",
        "image": "image",
        "split": "split",
    }
)
SURVIVAL = Schema(columns={"sample_id": "id", "time": "time", "event": "event", "age": "numeric"})


def _png(path: Path, *, mode: str = "RGB", size: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode).save(path)


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _site(folder: Path, name: str = "site_a", n: int = 4) -> tuple[Path, list[list[str]]]:
    """A good manifest with ``n`` rows and one 8x8 RGB PNG per row; returns (path, rows)."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        _png(folder / "img" / f"{name}_{i}.png", seed=i)
        rows.append([f"{name}-{i}", str(i % 2), str(30 + i), "FM"[i % 2], f"img/{name}_{i}.png", ["train", "val", ""][i % 3]])
    return _write(folder / f"{name}.csv", HEADER, rows), rows


def _problem(err: ManifestError, row: int | None, column: str | None) -> Problem:
    found = [p for p in err.problems if p.row == row and p.column == column]
    assert found, f"no problem at row {row}, column {column!r} in:\n{err}"
    return found[0]


def _assert_reported(err: ManifestError, path: Path, row: int | None, column: str | None, text: str) -> None:
    problem = _problem(err, row, column)
    assert problem.file == str(path)
    assert text in problem.message, problem.message
    line = str(problem)
    assert line.startswith(str(path))
    assert (f"row {row}" in line) == (row is not None)
    assert (f"column {column!r}" in line) == (column is not None)
    assert line in str(err).splitlines()


def test_good_manifest(tmp_path: Path) -> None:
    path, rows = _site(tmp_path)
    for schema in (SCHEMA, None):
        manifest = read_manifest(path, schema=schema)
        assert isinstance(manifest, Manifest)
        assert manifest.site == "site_a"
        assert manifest.path == path.absolute()
        assert manifest.task == "binary"
        assert manifest.schema.columns == SCHEMA.columns
        assert manifest.warnings == []
        assert manifest.table.shape == (4, len(HEADER))
        assert manifest.table["age"].tolist() == [r[2] for r in rows]
        assert manifest.table["split"].iloc[2] is None  # empty cell -> None
        assert manifest.file_path("image", 1) == tmp_path / "img" / "site_a_1.png"
        assert manifest.file_path("image", 1).is_file()


def test_file_path_of_empty_cell_and_non_file_column(tmp_path: Path) -> None:
    path, rows = _site(tmp_path)
    rows[0][4] = ""
    manifest = read_manifest(_write(path, HEADER, rows), schema=SCHEMA)
    assert manifest.file_path("image", 0) is None
    with pytest.raises(ValueError, match="not a file column"):
        manifest.file_path("age", 0)


# (name, raw bytes of the file or None for no file, row, column, text in the message)
RAW_CASES = [
    ("missing", None, None, None, "file not found"),
    ("empty", b"", None, None, "0 bytes"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", None, None, "binary content"),
    ("xlsx", b"PK\x03\x04\x14\x00\x06\x00", None, None, "Excel"),
    ("latin1", "sample_id,label\nb\xe9a,1\n".encode("latin-1"), None, None, "UTF-8"),
    ("semicolon", b"sample_id;label;age\na;1;3\n", 1, None, "';' (semicolon)"),
    ("tab", b"sample_id\tlabel\ta\t1\n", 1, None, "a tab"),
    ("header-only", b"sample_id,label,age\n", None, None, "site has no samples"),
    ("ragged-long", b"sample_id,label,age\na,1,3\nb,0,4,9\n", 3, None, "has 4 fields, expected 3"),
    ("ragged-short", b"sample_id,label,age\na,1,3\nb,0,4\nc,1\n", 4, None, "has 2 fields, expected 3"),
    ("blank-row", b"sample_id,label,age\na,1,3\n\nc,1,2\n", 3, None, "row is blank"),
    ("no-header", b"\nsample_id,label\n", 1, None, "header row is empty"),
    ("unnamed-column", b"sample_id,label,\na,1,3\n", 1, None, "column 3 has no name"),
    ("repeated-column", b"sample_id,label,age,age\na,1,3,4\n", 1, "age", "more than once"),
    ("no-sample-id", b"id,label\na,1\n", 1, "sample_id", "missing required column 'sample_id'"),
    ("no-label", b"sample_id,age\na,1\n", 1, "label", "missing required column 'label'"),
]


@pytest.mark.parametrize(("name", "data", "row", "column", "text"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_bad_file(tmp_path: Path, name: str, data: bytes | None, row: int | None, column: str | None, text: str) -> None:
    path = tmp_path / f"{name}.csv"
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    _assert_reported(info.value, path, row, column, text)


def test_wrong_delimiter_says_comma_expected(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("sample_id;label\na;1\n")
    with pytest.raises(ManifestError, match="separated by ','"):
        read_manifest(path)


def _schema(**changes: object) -> Schema:
    d = SCHEMA.to_dict()
    d.update(changes)
    return Schema.from_dict(d)


# (name, data row index (0-based), column, new cell, schema, row, column reported, text)
CELL_CASES = [
    ("not-a-number", 1, "age", "abc", SCHEMA, 3, "age", "expected a number, found 'abc'"),
    ("nan", 0, "age", "nan", SCHEMA, 2, "age", "found 'nan'"),
    ("inf", 2, "age", "inf", SCHEMA, 4, "age", "nan/inf are not allowed"),
    ("minus-inf", 3, "age", "-inf", SCHEMA, 5, "age", "found '-inf'"),
    ("empty-label", 2, "label", "", SCHEMA, 4, "label", "label is empty"),
    ("unknown-class", 1, "label", "cat", _schema(classes=["0", "1"]), 3, "label", "known classes: 0, 1"),
    ("binary-too-many", 1, "label", "7", _schema(task="binary"), None, "label", "take 3 values"),
    ("unknown-category", 3, "sex", "X", _schema(categories={"sex": ["F", "M"]}), 5, "sex", "known values: F, M"),
    ("bad-split", 0, "split", "training", SCHEMA, 2, "split", "train, val or test"),
    ("duplicate-id", 3, "sample_id", "site_a-1", SCHEMA, 5, "sample_id", "first used in row 3"),
    ("empty-id", 2, "sample_id", "", SCHEMA, 4, "sample_id", "sample_id is empty"),
    ("image-missing", 1, "image", "img/none.png", SCHEMA, 3, "image", "file not found: 'img/none.png'"),
    ("image-corrupt", 2, "image", "img/corrupt.png", SCHEMA, 4, "image", "cannot read the file"),
    ("image-gray", 3, "image", "img/gray.png", SCHEMA, 5, "image", "expected shape [3, 8, 8] (as in row 2), found [1, 8, 8]"),
    ("image-rgba", 1, "image", "img/rgba.png", SCHEMA, 3, "image", "found [4, 8, 8] (mode 'RGBA')"),
    ("image-size", 1, "image", "img/big.png", SCHEMA, 3, "image", "found [3, 16, 16]"),
    ("image-vs-schema", 0, "image", "img/gray.png", _schema(shapes={"image": [1, 8, 8]}), 3, "image", "schema.yaml"),
    ("image-extension", 2, "image", "img/notes.txt", SCHEMA, 4, "image", "expected a image file"),
    ("npy-corrupt", 1, "image", "img/corrupt.npy", SCHEMA, 3, "image", "cannot read the file"),
]


@pytest.mark.parametrize(
    ("name", "index", "cell_column", "value", "schema", "row", "column", "text"), CELL_CASES, ids=[c[0] for c in CELL_CASES]
)
def test_bad_cell(
    tmp_path: Path, name: str, index: int, cell_column: str, value: str, schema: Schema, row: int | None, column: str, text: str
) -> None:
    path, rows = _site(tmp_path)
    _png(tmp_path / "img" / "gray.png", mode="L")
    _png(tmp_path / "img" / "rgba.png", mode="RGBA")
    _png(tmp_path / "img" / "big.png", size=16)
    (tmp_path / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "img" / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    rows[index][HEADER.index(cell_column)] = value
    _write(path, HEADER, rows)
    with pytest.raises(ManifestError) as info:
        read_manifest(path, schema=schema)
    _assert_reported(info.value, path, row, column, text)
    del name


def test_a_column_the_schema_does_not_name_is_inferred(tmp_path: Path) -> None:
    path, rows = _site(tmp_path)
    _write(path, HEADER + ["weight"], [r + ["70"] for r in rows])
    manifest = read_manifest(path, schema=SCHEMA)
    assert manifest.schema.columns == {**SCHEMA.columns, "weight": "numeric"}
    assert manifest.inferred.columns == ("weight",)


def test_schema_column_absent_from_manifest(tmp_path: Path) -> None:
    path, rows = _site(tmp_path)
    _write(path, HEADER[:-1], [r[:-1] for r in rows])
    with pytest.raises(ManifestError) as info:
        read_manifest(path, schema=SCHEMA)
    _assert_reported(info.value, path, 1, "split", "is missing")


SURVIVAL_HEADER = ["sample_id", "time", "event", "age"]
# (row index, column, new cell, row, text)
SURVIVAL_CASES = [
    (0, "time", "-1", 2, "time must be >= 0"),
    (1, "time", "soon", 3, "expected a number"),
    (2, "time", "inf", 4, "nan/inf are not allowed"),
    (1, "time", "", 3, "time is empty"),
    (0, "event", "2", 2, "event must be 0 (censored) or 1 (event), found '2'"),
    (2, "event", "yes", 4, "found 'yes'"),
    (1, "event", "", 3, "event is empty"),
]


@pytest.mark.parametrize(("index", "column", "value", "row", "text"), SURVIVAL_CASES)
def test_bad_survival_cell(tmp_path: Path, index: int, column: str, value: str, row: int, text: str) -> None:
    rows = [[f"s{i}", str(1.5 * i), str(i % 2), str(40 + i)] for i in range(3)]
    rows[index][SURVIVAL_HEADER.index(column)] = value
    path = _write(tmp_path / "surv.csv", SURVIVAL_HEADER, rows)
    with pytest.raises(ManifestError) as info:
        read_manifest(path, schema=SURVIVAL)
    _assert_reported(info.value, path, row, column, text)


def test_good_survival_and_missing_survival_columns(tmp_path: Path) -> None:
    rows = [[f"s{i}", str(1.5 * i), str(i % 2), str(40 + i)] for i in range(3)]
    path = _write(tmp_path / "surv.csv", SURVIVAL_HEADER, rows)
    assert read_manifest(path, schema=SURVIVAL).task == "survival"
    assert read_manifest(path).task == "survival"  # inferred from the time and event columns
    _write(path, ["sample_id", "time", "age"], [[r[0], r[1], r[3]] for r in rows])
    with pytest.raises(ManifestError) as info:
        read_manifest(path, task="survival")
    _assert_reported(info.value, path, 1, "event", "missing required column 'event'")


def test_every_problem_is_collected_in_row_order(tmp_path: Path) -> None:
    path, rows = _site(tmp_path)
    rows[0][2], rows[1][1], rows[3][4] = "abc", "", "img/none.png"
    _write(path, HEADER, rows)
    with pytest.raises(ManifestError) as info:
        read_manifest(path, schema=SCHEMA)
    assert [(p.row, p.column) for p in info.value.problems] == [(2, "age"), (3, "label"), (5, "image")]


def test_error_text_is_capped(tmp_path: Path) -> None:
    rows = [[f"s{i}", str(i % 2), "x"] for i in range(60)]
    path = _write(tmp_path / "many.csv", ["sample_id", "label", "age"], rows)
    schema = Schema(columns={"sample_id": "id", "label": "label", "age": "numeric"})
    with pytest.raises(ManifestError) as info:
        read_manifest(path, schema=schema)
    assert len(info.value.problems) == 60
    lines = str(info.value).splitlines()
    assert len(lines) == 51 and lines[-1] == "... and 10 more"


def test_problem_str_omits_missing_parts() -> None:
    assert str(Problem("sites/a.csv", 7, "age", "expected a number, found 'abc'")) == (
        "sites/a.csv, row 7, column 'age': expected a number, found 'abc'"
    )
    assert str(Problem("sites/a.csv", None, None, "file not found")) == "sites/a.csv: file not found"


def test_check_files_false_skips_opening(tmp_path: Path) -> None:
    path, rows = _site(tmp_path)
    rows[0][4] = "img/none.png"
    manifest = read_manifest(_write(path, HEADER, rows), schema=SCHEMA, check_files=False)
    assert manifest.file_path("image", 0) == tmp_path / "img" / "none.png"


def test_warnings(tmp_path: Path) -> None:
    path, rows = _site(tmp_path)
    for r in rows:
        r[1], r[4] = "1", ""
    manifest = read_manifest(_write(path, HEADER, rows), schema=SCHEMA, task="binary")
    assert any("one class only" in w for w in manifest.warnings)
    assert any("'image'" in w and "empty for every row" in w for w in manifest.warnings)


def test_unknown_task_argument(tmp_path: Path) -> None:
    path, _ = _site(tmp_path)
    with pytest.raises(ValueError, match="unknown task 'binay'"):
        read_manifest(path, task="binay")


def test_folder_with_schema(tmp_path: Path) -> None:
    _site(tmp_path, "site_b")
    _site(tmp_path, "site_a")
    SCHEMA.save(tmp_path / "schema.yaml")
    manifests = read_manifest_folder(tmp_path)
    assert [m.site for m in manifests] == ["site_a", "site_b"]
    assert all(m.task == "binary" and m.schema == SCHEMA for m in manifests)


def test_folder_collects_problems_of_all_files(tmp_path: Path) -> None:
    path_a, rows_a = _site(tmp_path, "site_a")
    path_b, rows_b = _site(tmp_path, "site_b")
    rows_a[0][4], rows_b[1][5] = "img/none.png", "tst"
    _write(path_a, HEADER, rows_a)
    _write(path_b, HEADER, rows_b)
    (tmp_path / "site_c.csv").write_bytes(b"")
    with pytest.raises(ManifestError) as info:
        read_manifest_folder(tmp_path)
    files = {p.file for p in info.value.problems}
    assert files == {str(tmp_path / n) for n in ("site_a.csv", "site_b.csv", "site_c.csv")}
    _assert_reported(info.value, tmp_path / "site_b.csv", 3, "split", "train, val or test")


def test_folder_without_schema_requires_same_columns(tmp_path: Path) -> None:
    _site(tmp_path, "site_a")
    path_b, rows_b = _site(tmp_path, "site_b")
    _write(path_b, HEADER + ["weight"], [r + ["70"] for r in rows_b])
    with pytest.raises(ManifestError) as info:
        read_manifest_folder(tmp_path)
    _assert_reported(info.value, path_b, 1, "weight", "site_a.csv")


def test_folder_infers_image_column_from_a_later_site(tmp_path: Path) -> None:
    path_a, rows_a = _site(tmp_path, "site_a")
    for r in rows_a:
        r[4] = ""
    _write(path_a, HEADER, rows_a)
    path_b, _ = _site(tmp_path, "site_b")
    manifests = read_manifest_folder(tmp_path)
    assert manifests[0].schema.columns["image"] == "image"
    assert any("empty for every row" in w for w in manifests[0].warnings)


def test_folder_task_is_inferred_once_for_all_sites(tmp_path: Path) -> None:
    path_a, rows_a = _site(tmp_path, "site_a", n=30)
    for i, r in enumerate(rows_a):
        r[1] = str(i % 3)  # three classes here, the third with enough samples to be one
    _write(path_a, HEADER, rows_a)
    _site(tmp_path, "site_b")  # two classes here
    assert [m.task for m in read_manifest_folder(tmp_path)] == ["multiclass", "multiclass"]


@pytest.mark.parametrize(
    ("setup", "text"),
    [("missing", "folder not found"), ("no-csv", "no *.csv file"), ("bad-schema", "unknown role 'idd'")],
)
def test_folder_errors(tmp_path: Path, setup: str, text: str) -> None:
    folder = tmp_path / "sites"
    if setup != "missing":
        folder.mkdir()
    if setup == "bad-schema":
        _site(folder)
        (folder / "schema.yaml").write_text("schema_version: 1\ncolumns: {sample_id: idd}\n")
    with pytest.raises(ManifestError) as info:
        read_manifest_folder(folder)
    assert text in str(info.value)
    expected_file = folder / "schema.yaml" if setup == "bad-schema" else folder
    assert info.value.problems[0].file == str(expected_file)


def test_ten_thousand_rows_are_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    header = ["sample_id", "label", "group_id", "split"] + [f"x{j}" for j in range(20)] + ["site_kind"]
    values = rng.normal(size=(10_000, 20)).round(4).astype(str)
    rows = [
        [f"s{i}", str(i % 2), f"p{i // 3}", "train"] + list(values[i]) + ["ab"[i % 2]] for i in range(10_000)
    ]
    rows[9_999][5] = "oops"
    path = _write(tmp_path / "big.csv", header, rows)
    start = time.perf_counter()
    with pytest.raises(ManifestError) as info:
        read_manifest(path, schema=Schema(columns={c: r for c, r in infer_schema_roles(header).items()}))
    assert time.perf_counter() - start < 5.0
    _assert_reported(info.value, path, 10_001, "x1", "found 'oops'")


def infer_schema_roles(header: list[str]) -> dict[str, str]:
    named = {"sample_id": "id", "label": "label", "group_id": "group", "split": "split", "site_kind": "categorical"}
    return {c: named.get(c, "numeric") for c in header}


def test_nifti_without_nibabel_is_only_checked_to_exist(tmp_path: Path) -> None:
    try:
        import nibabel  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("nibabel is installed; this covers the fallback")
    (tmp_path / "vol.nii.gz").write_bytes(b"not checked")
    path = _write(tmp_path / "mri.csv", ["sample_id", "label", "mri"], [["a", "0", "vol.nii.gz"], ["b", "1", "gone.nii"]])
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    _assert_reported(info.value, path, 3, "mri", "file not found: 'gone.nii'")
    _write(path, ["sample_id", "label", "mri"], [["a", "0", "vol.nii.gz"], ["b", "1", ""]])
    assert any("nibabel is not installed" in w for w in read_manifest(path).warnings)
