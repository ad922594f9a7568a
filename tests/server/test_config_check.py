"""Config values checked against the YAML's own kinds, and the ServerApp's run config."""

from __future__ import annotations

import re

import pytest

from server.config_check import group_overrides, value_problems
from server.default_config import CONFIG_DIR, compose_config, settings_from_run_config

DEFAULTS = {"rounds": 40, "max_samples": None, "seed": 0, "flag": True, "baselines": ["pooled"],
            "train": {"epochs": 0.25, "label_skew": "none"}, "data": {"params": {"n": 5}}}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "problem"),
    [({"rounds": "abc"}, "rounds: expected an integer (the default is 40), got 'abc'"),
     ({"rounds": 2.5}, "rounds: expected an integer"),
     ({"rounds": True}, "rounds: expected an integer"),
     ({"seed": 1, "train": {"epochs": "x", "label_skew": "none"}}, "train.epochs: expected a number"),
     ({"max_samples": "x"}, "max_samples: expected an integer or null, got 'x'"),
     ({"flag": 1}, "flag: expected true or false"),
     ({"baselines": "pooled"}, "baselines: expected a list"),
     ({"data": {"params": {"n": "many"}}}, "data.params.n: expected an integer"),
     ({"typo": 1}, "typo: no such key (keys here: baselines, data, flag, max_samples, rounds, seed, train)"),
     ({"train": {"epochs": 1, "label_skew": "none", "epoch": 2}}, "train.epoch: no such key")],
)  # fmt: skip
def test_a_value_of_the_wrong_kind_is_named_with_what_was_expected(change, problem):
    problems = value_problems({**DEFAULTS, **change}, DEFAULTS)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_right_kinds_pass_and_loader_params_may_be_appended():
    ok = {**DEFAULTS, "rounds": 3, "max_samples": 100, "train": {"epochs": 1, "label_skew": "x"},
          "data": {"params": {"n": 5, "series_root": "/tmp/s"}}}  # fmt: skip
    assert value_problems(ok, DEFAULTS) == []


def test_group_choices_are_told_apart_from_values():
    overrides = ["data=tcga_brca", "encoder/image=resnet", "+partition=iid", "rounds=3", "train.epochs=1", "hydra.run.dir=x"]
    assert group_overrides(overrides, CONFIG_DIR) == ["data=tcga_brca", "encoder/image=resnet", "+partition=iid"]


def test_compose_refuses_a_bad_value_naming_the_key():
    with pytest.raises(ValueError, match=r"^rounds: expected an integer \(the default is 40\), got 'abc'$"):
        compose_config(["rounds=abc"])
    with pytest.raises(ValueError, match=r"data\.dir: needs a value .* add data\.dir=<value> .*configs/data/manifests\.yaml"):
        compose_config(["data=manifests"])
    with pytest.raises(ValueError, match="(?s)Could not find 'data/nope'.*ham10000"):
        compose_config(["data=nope"])
    assert compose_config(["data=manifests", "data.dir=/somewhere", "rounds=2"])["data"]["root"] == "/somewhere"


def test_the_server_app_reads_overrides_and_counts_the_sites(tmp_path):
    for site in ("a", "b", "c"):
        (tmp_path / f"{site}.csv").write_text("sample_id,label\n")
    settings = settings_from_run_config({"sites-dir": str(tmp_path), "overrides": "rounds=3 'train.epochs=0.5'",
                                         "config-json": ""})  # fmt: skip
    assert (settings.rounds, settings.train.epochs, settings.num_sites) == (3, 0.5, 3)
    assert settings_from_run_config({"sites-dir": str(tmp_path), "overrides": "num_sites=2"}).num_sites == 2
    assert settings_from_run_config({"config-json": settings.to_json()}) == settings
    with pytest.raises(ValueError, match="config-json or overrides, not both"):
        settings_from_run_config({"config-json": settings.to_json(), "overrides": "rounds=2"})
    with pytest.raises(ValueError, match="rounds: expected an integer"):
        settings_from_run_config({"overrides": "rounds=many"})
    with pytest.raises(ValueError, match="no manifests"):
        settings_from_run_config({"sites-dir": str(tmp_path / "empty")})


@pytest.mark.parametrize("override, problem", [
    ("train.lr=abc", "train.lr: expected a number (the default is 0.001), got 'abc'"),
    ("train.batch_size=abc", "train.batch_size: expected an integer (the default is 64), got 'abc'"),
    ("train.batch_size=2.5", "train.batch_size: expected an integer (the default is 64), got 2.5"),
    ("personalization.epochs=abc", "personalization.epochs: expected a number (the default is 20.0), got 'abc'"),
])  # fmt: skip
def test_a_key_whose_default_another_option_may_set_still_has_its_kind_checked(override, problem):
    from server.default_config import default_run_settings

    with pytest.raises(ValueError, match=re.escape(problem)):
        default_run_settings([override])


@pytest.mark.parametrize("overrides, batch_size", [
    ([], 64),
    (["data=tcga_brca"], 256),  # the measured survival default: configs/data/tcga_brca.yaml
    (["data=tcga_brca", "train.batch_size=32"], 32),  # an explicit train.batch_size wins
])  # fmt: skip
def test_a_data_set_may_bring_its_own_batch_size_default(overrides, batch_size):
    from server.default_config import default_run_settings

    assert default_run_settings(overrides).train.batch_size == batch_size
