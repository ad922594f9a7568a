"""`fedfusion` as a new user meets it when something is wrong: every config error names the key
and what it expects, without a traceback, and leaves no run folder behind; the `cache` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulation.cache import cache_command, cache_entries
from simulation.cli import _after_failure
from tests.conftest import write_image_sites

REPO = Path(__file__).resolve().parents[2]


def _fedfusion(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulation.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["data=manifests"], "data.dir: needs a value and has none; add data.dir=<value> to the command "
                          "(see configs/data/manifests.yaml)"),
     (["rounds=abc"], "rounds: expected an integer (the default is 40), got 'abc'"),
     (["train.epochs=fast", "max_samples=some"], "max_samples: expected an integer or null, got 'some'; "
                                                 "train.epochs: expected a number (the default is 0.25), got 'fast'"),
     (["+rouns=3"], "rouns: no such key"),
     (["split.val_fraction=0.9"], "split.val_fraction + split.test_fraction must be < 1"),
     (["data=synthetic", "+data.params.n_sample=10"], "data.params: dataset 'synthetic' has no parameter n_sample")],
)  # fmt: skip
def test_a_config_error_names_the_key_without_a_traceback_and_leaves_no_folder(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    result = _fedfusion("simulate", *overrides, f"hydra.run.dir={run_dir}")
    output = " ".join((result.stdout + result.stderr).split())  # rich folds long lines
    assert result.returncode == 2, output
    assert "Traceback" not in output and message in output
    assert "differential privacy" not in output
    assert not run_dir.exists() and f"the run folder {run_dir} was removed" in output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["fusion=nosuch"], "Could not find 'fusion/nosuch' Available options in 'fusion': concat"),
     (["nosuchkey=3"], "Could not override 'nosuchkey'. To append to your config use +nosuchkey=3")],
)  # fmt: skip
def test_hydras_own_composition_errors_exit_2_without_the_search_path(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    result = _fedfusion("simulate", *overrides, f"hydra.run.dir={run_dir}")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, output
    assert f"error: overrides '{overrides[0]}': " in output and message in output
    assert "Config search path" not in output and "HYDRA_FULL_ERROR" not in output
    assert not run_dir.exists()


def test_a_data_error_comes_before_any_warning_and_a_folder_with_files_is_kept(tmp_path):
    sites = tmp_path / "sites"
    write_image_sites(sites, sites={"north": 10, "south": 10})
    frame = pd.read_csv(sites / "south.csv", dtype=str, keep_default_na=False)
    frame.loc[3, "age"] = "forty"
    frame.to_csv(sites / "south.csv", index=False)
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("the user's own file")
    result = _fedfusion("simulate", "data=manifests", f"data.dir={sites}", f"hydra.run.dir={run_dir}")
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output
    assert "south.csv, row 5, column 'age'" in output
    assert "WARNING" not in output and "differential privacy" not in output
    assert (run_dir / "notes.txt").read_text() == "the user's own file"
    assert (run_dir / "FAILED.txt").is_file()


def test_a_run_that_reached_flower_keeps_its_logs_and_is_marked_failed(tmp_path):
    fresh = tmp_path / "before_flower"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / "sites").mkdir()
    assert "removed" in _after_failure(fresh, True, ValueError("bad manifest"))
    assert not fresh.exists()

    ran = tmp_path / "after_flower"
    (ran / "logs").mkdir(parents=True)
    line = _after_failure(ran, True, RuntimeError("`flwr run` exited with code 1"))
    assert "kept for its logs and marked failed" in line
    text = (ran / "FAILED.txt").read_text()
    assert "RuntimeError: `flwr run` exited with code 1" in text and str(ran / "logs") in text


def test_cache_show_and_clear_touch_only_cache_entries(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "cache"
    monkeypatch.setenv("FEDFUSION_CACHE", str(folder))
    folder.mkdir()
    entry = folder / f"image-{'ab' * 12}.npz"
    np.savez(entry, values=np.zeros((4, 3)), present=np.ones(4, dtype=bool))
    (folder / "keep.txt").write_text("not ours")
    assert cache_entries(folder) == [entry]
    assert cache_command([]) == 0 and f"cache: {folder} (1 entries" in capsys.readouterr().out
    assert cache_command(["clear"]) == 0 and "cleared 1 entries" in capsys.readouterr().out
    assert not entry.exists() and (folder / "keep.txt").exists()
    assert cache_command(["purge"]) == 2
