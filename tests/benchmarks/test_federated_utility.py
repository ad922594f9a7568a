"""The federated-utility benchmark's ``--reuse``: recipes read from earlier run folders pair by
seed exactly as recipes it runs, and folders that cannot pair are refused."""

import json

import pytest

from benchmarks.federated_utility import main
from simulation.repeats import aggregate_repeats
from simulation.run_summary import RepeatsSummary
from tests.simulation.test_repeats import _summary


def _write(folder, federated_a: list[float], seeds=(0, 1, 2)):
    runs = [_summary({"a": v, "b": 0.6, "c": 0.5}, {"a": 0.7, "b": 0.7, "c": 0.5}) for v in federated_a]
    summary = RepeatsSummary(name="toy", dataset="ham10000", task="binary", headline="auroc", higher_is_better=True,
                             seeds=list(seeds), aggregate=aggregate_repeats(runs), paired=[], runs=runs)  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(summary.to_json())
    return folder


def test_reused_recipes_pair_by_seed_and_nothing_runs(tmp_path):
    first = _write(tmp_path / "first", [0.70, 0.80, 0.60])
    second = _write(tmp_path / "second", [0.74, 0.78, 0.69])
    results = main(["--recipes", "default", "default+finetune20", "--repeats", "3", "--reuse", f"default={first}",
                    "--reuse", f"default+finetune20={second}", "--out", str(tmp_path / "out")])  # fmt: skip
    cross = results["datasets"]["ham10000"]["cross_recipe"]
    federated = next(c for c in cross if c["first"] == "default+finetune20:federated")
    # site means over the readable sites a and b: (a + 0.6) / 2, so the differences are half of a's
    assert federated["differences"] == pytest.approx([0.02, -0.01, 0.045])
    assert results["datasets"]["ham10000"]["recipes"]["default"]["reused_from"] == str(first)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["datasets"]["ham10000"]["cross_recipe"]


def test_reuse_refuses_folders_that_cannot_pair(tmp_path, capsys):
    first = _write(tmp_path / "first", [0.70, 0.80, 0.60])
    other_seeds = _write(tmp_path / "other", [0.70, 0.80, 0.60], seeds=(3, 4, 5))
    with pytest.raises(SystemExit):
        main(["--recipes", "default", "default+finetune20", "--repeats", "3", "--reuse", f"default={first}",
              "--reuse", f"default+finetune20={other_seeds}", "--out", str(tmp_path / "out")])  # fmt: skip
    assert "ran different seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--recipes", "default", "--repeats", "2", "--reuse", f"default={first}", "--out", str(tmp_path / "o")])
    assert "holds 3 repeats, not --repeats 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--recipes", "default", "--repeats", "3", "--reuse", f"fedavg={first}", "--out", str(tmp_path / "o")])
    assert "expected RECIPE=RUN_DIR" in capsys.readouterr().err
