"""The sweep's pieces without Flower: what a privacy sweep adds to the overrides, how epsilon inf
becomes privacy=none, and the table and plots gathered from job folders."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image

from server.default_config import CONFIG_DIR
from simulation.config import SimulationConfig
from simulation.run_summary import MethodResult, RepeatsSummary, RunSummary
from simulation.sweep import NO_DP, _dp_defaults, collect, job_overrides, prepare_overrides, write_sweep


def test_a_privacy_sweep_gets_privacy_dp_and_an_attack_unless_it_names_them():
    out, notes = prepare_overrides(["privacy.target_epsilon=inf,10,5,1", "fusion=concat,gmu"])
    assert out == ["privacy=dp", "privacy.target_epsilon=inf,10,5,1", "fusion=concat,gmu", "attack=loss"]
    assert len(notes) == 2
    given = ["privacy=dp_fixed_noise", "privacy.noise_multiplier=1.0,2.0", "attack=lira"]
    assert prepare_overrides(given) == (given, [])


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return SimulationConfig.from_cfg(compose(config_name="config", overrides=overrides), overrides=overrides)


def test_the_job_without_dp_keeps_every_default_privacy_dp_brings():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        dp_cfg = compose(config_name="config", overrides=["privacy=dp", "privacy.target_epsilon=5"])
    keep = _dp_defaults(dp_cfg)
    assert keep == {"train.lr": 0.012, "train.batch_size": 256, "personalization.epochs": 3.0}
    plain = _compose([]).run
    assert (plain.train.lr, plain.train.batch_size, plain.personalization.epochs) != (0.012, 256, 3.0)
    mapped = _compose(job_overrides(["privacy=dp", "privacy.target_epsilon=inf"], math.inf, keep=keep)).run
    assert not mapped.privacy.enabled
    assert (mapped.train.lr, mapped.train.batch_size, mapped.personalization.epochs) == (0.012, 256, 3.0)


def test_epsilon_inf_runs_without_dp_and_a_finite_epsilon_with_it():
    job = ["privacy=dp", "privacy.target_epsilon=inf", "privacy.max_grad_norm=2.0", "fusion=gmu", "attack=loss"]
    with pytest.raises(ValueError, match="target_epsilon must be a finite number"):
        _compose(job)  # what privacy=dp alone would say: hence the mapping
    mapped = job_overrides(job, math.inf)
    assert mapped == ["fusion=gmu", "attack=loss", "privacy=none"]
    config = _compose(mapped)
    assert config.privacy == "none" and not config.run.privacy.enabled and config.run.model.fusion["name"] == "gmu"
    # privacy=dp brings its own train.lr default; the job without DP keeps it, so only the mechanism changes
    dp_lr = _compose(["privacy=dp", "privacy.target_epsilon=5"]).run.train.lr
    assert dp_lr != _compose([]).run.train.lr
    mapped = job_overrides([*job, "train.lr=0.5"], math.inf, keep={"train.lr": dp_lr})
    assert mapped == ["fusion=gmu", "attack=loss", f"train.lr={dp_lr!r}", "privacy=none"]
    assert _compose(mapped).run.train.lr == dp_lr
    # and its fine-tuning passes (in the DP noise plan, so privacy=dp's default is fewer)
    dp_epochs = _compose(["privacy=dp"]).run.personalization.epochs
    assert dp_epochs != _compose([]).run.personalization.epochs
    mapped = job_overrides(job, math.inf, keep={"train.lr": dp_lr, "personalization.epochs": dp_epochs})
    assert _compose(mapped).run.personalization.epochs == dp_epochs and _compose(mapped).run.train.lr == dp_lr
    finite = ["privacy=dp", "privacy.target_epsilon=5", "fusion=gmu"]
    assert job_overrides(finite, 5) == finite
    assert _compose(finite).run.privacy.target_epsilon == 5


def _job(sweep_dir, number, overrides, *, privacy, auroc, attack_auc, spent=None, failed=None):
    folder = sweep_dir / f"{number}_synthetic"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if failed:
        (folder / "FAILED.txt").write_text(failed)
        return
    (folder / "config.yaml").write_text(yaml.safe_dump({"privacy": privacy}))
    reason = "not resolvable: 60 non-members; a TPR at 0.1% FPR needs >= 1000 (one false positive is 1.67%)"
    pooled = {"site": "pooled", "members": 60, "non_members": 60, "auc": attack_auc, "tpr_at_1pct_fpr": None,
              "tpr_at_0_1pct_fpr": None, "unresolved": {"tpr_at_0_1pct_fpr": reason, "tpr_at_1pct_fpr": reason}}
    summary = {"name": "synthetic", "task": "binary", "headline": "auroc",
               "methods": {"federated": {"site_mean": {"auroc": auroc}, "pooled_test": {"auroc": auroc + 0.01}}},
               "attacks": {"attack": "loss", "pooled": pooled},
               "privacy_sites": {"federated": {"a": {"epsilon": spent}, "b": {"epsilon": spent / 2}}} if spent else {}}
    (folder / "summary.json").write_text(json.dumps(summary))  # fmt: skip


def test_job_folders_become_one_table_and_two_plots(tmp_path):
    _job(tmp_path, 0, ["privacy=dp", "privacy.target_epsilon=inf", "fusion=concat"], privacy={"name": "none"},
         auroc=0.9, attack_auc=0.7)  # fmt: skip
    _job(tmp_path, 1, ["privacy=dp", "privacy.target_epsilon=inf", "fusion=gmu"], privacy={"name": "none"},
         auroc=0.85, attack_auc=0.66)  # fmt: skip
    _job(tmp_path, 2, ["privacy=dp", "privacy.target_epsilon=5", "fusion=concat"],
         privacy={"name": "dp", "target_epsilon": 5.0}, auroc=0.8, attack_auc=0.52, spent=4.9)  # fmt: skip
    _job(tmp_path, 3, ["privacy=dp", "privacy.target_epsilon=5", "fusion=gmu"], privacy={}, auroc=0, attack_auc=0,
         failed="ValueError: fusion gmu exploded\nmore")  # fmt: skip
    rows = collect(tmp_path)
    assert [r.job for r in rows] == [0, 1, 2, 3]
    assert [r.method for r in rows] == ["fusion=concat", "fusion=gmu", "fusion=concat", "fusion=gmu"]
    assert rows[0].epsilon == math.inf and rows[0].privacy == NO_DP and math.isnan(rows[0].epsilon_spent)
    assert rows[2].epsilon == 5.0 and rows[2].epsilon_spent == 4.9 and rows[2].attack_auc == 0.52
    assert rows[2].federated == 0.8 and rows[2].pooled_test == pytest.approx(0.81)
    assert rows[2].tpr_at_0_1pct_fpr is None and "60 non-members" in rows[2].notes
    assert rows[3].status == "failed: ValueError: fusion gmu exploded"
    written = write_sweep(tmp_path, rows)
    assert [p.name for p in written] == ["sweep.csv", "sweep.md", "utility_vs_epsilon.png", "attack_vs_epsilon.png"]
    table = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [t["epsilon"] for t in table[:3]] == ["inf", "inf", "5.0"] and table[2]["attack_auc"] == "0.52"
    assert table[2]["tpr_at_0_1pct_fpr"] == ""  # None
    md = (tmp_path / "sweep.md").read_text()
    assert f"| fusion=concat | inf | {NO_DP} |" in md and "failed: ValueError: fusion gmu exploded" in md
    assert "None: not resolvable: 60 non-members" in md
    for plot in written[2:]:
        with Image.open(plot) as image:
            assert image.format == "PNG" and image.size[0] > 300


def test_a_job_of_several_repeats_is_the_mean_and_std_over_them(tmp_path):
    folder = tmp_path / "0_synthetic"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["fusion=gmu"]))
    (folder / "config.yaml").write_text(yaml.safe_dump({"privacy": {"name": "none"}}))
    def run(auroc: float, attack_auc: float) -> RunSummary:
        federated = MethodResult(per_site={}, site_mean={"auroc": auroc}, pooled_test={"auroc": auroc})
        pooled = {"auc": attack_auc, "tpr_at_1pct_fpr": 0.1, "tpr_at_0_1pct_fpr": 0.0}
        return RunSummary(name="toy", task="binary", headline="auroc", metrics=["auroc"],
                          methods={"federated": federated}, attacks={"attack": "loss", "pooled": pooled})  # fmt: skip

    runs = [run(0.8, 0.6), run(0.6, 0.5)]
    summary = RepeatsSummary(name="toy", dataset="synthetic", task="binary", headline="auroc", higher_is_better=True,
                             seeds=[0, 1], aggregate={}, paired=[], runs=runs)  # fmt: skip
    (folder / "summary.json").write_text(summary.to_json())
    (row,) = collect(tmp_path)
    assert row.repeats == 2 and row.federated == pytest.approx(0.7) and row.pooled_test == pytest.approx(0.7)
    assert row.federated_std == pytest.approx(math.sqrt(0.02)) and row.attack_auc == pytest.approx(0.55)
    assert row.tpr_at_1pct_fpr == pytest.approx(0.1) and row.privacy == NO_DP


def test_collect_names_a_folder_without_jobs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no job folders"):
        collect(tmp_path)
