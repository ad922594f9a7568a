"""The staged Flower app: the same bundle as ``flwr run`` on the project root, without its walk."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from simulation.app_bundle import bundle_files, stage_app

ROOT = Path(__file__).resolve().parents[2]


def _fab_contents(app_dir: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app_dir))) as fab:
        return {name: fab.read(name) for name in fab.namelist()}


def test_the_staged_app_builds_the_same_flower_bundle_as_the_project_root(tmp_path):
    staged = stage_app(ROOT, tmp_path / "app")
    from_root, from_staged = _fab_contents(ROOT), _fab_contents(staged)
    assert sorted(from_staged) == sorted(from_root)
    assert from_staged == from_root
    assert {"client/app.py", "server/app.py", "configs/config.yaml"} <= set(from_staged)


def test_only_pyproject_and_the_fab_include_files_are_staged(tmp_path):
    staged = stage_app(ROOT, tmp_path / "app")
    copied = {p.relative_to(staged) for p in staged.rglob("*") if p.is_file()}
    assert copied == {Path("pyproject.toml"), *bundle_files(ROOT)}
    assert not any(part in {".venv", "tests", "__pycache__"} for path in copied for part in path.parts)


def _project(tmp_path: Path, fab_include: str | None) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("A = 1\n")
    (tmp_path / "notes.txt").write_text("not in the bundle\n")
    include = "" if fab_include is None else f"fab-include = {fab_include}\n"
    (tmp_path / "pyproject.toml").write_text(f"[tool.flwr.app]\npublisher = 'x'\n{include}")
    return tmp_path


def test_a_pattern_that_matches_nothing_names_the_pyproject_and_the_pattern(tmp_path):
    project = _project(tmp_path, '["pkg/**/*.py", "confs/**/*.yaml"]')
    with pytest.raises(ValueError, match=r"pyproject\.toml: fab-include pattern 'confs/\*\*/\*\.yaml' matches no file"):
        bundle_files(project)


def test_a_missing_fab_include_list_is_refused(tmp_path):
    project = _project(tmp_path, None)
    with pytest.raises(ValueError, match=r"pyproject\.toml: \[tool\.flwr\.app\] needs a non-empty 'fab-include'"):
        stage_app(project, tmp_path / "staged")


def test_a_small_project_stages_its_listed_files_only(tmp_path):
    (tmp_path / "project").mkdir()
    project = _project(tmp_path / "project", '["pkg/**/*.py"]')
    staged = stage_app(project, tmp_path / "staged")
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == ["pkg/a.py", "pyproject.toml"]
