"""The fusion zoo benchmark end to end at a smoke-test budget (never the full benchmark)."""

import json

import pytest

from benchmarks.fusion_zoo import FEDERATED_LABEL, METHODS, expand_heads, main, parse_args, variants


def test_quick_run_writes_a_row_per_head_and_method(tmp_path):
    out = tmp_path / "zoo"
    results = main(["--quick", "--datasets", "synthetic", "--heads", "concat", "single", "--missing", "0.3",
                    "--max-samples", "600", "--override", "num_sites=2", "--out", str(out)])  # fmt: skip
    stored = json.loads((out / "results.json").read_text())
    assert stored["config"]["seeds"] == [0] and stored["federated"] == FEDERATED_LABEL
    (key, entry), = stored["datasets"].items()
    assert key == "synthetic/image_missing=0.3" and entry["missing"] == {"image": 0.3}
    heads = ["concat", "single:image", "single:tabular", "single:omics"]
    assert {(r["head"], r["method"]) for r in entry["runs"]} == {(h, m) for h in heads for m in METHODS}
    for run in entry["runs"]:
        assert run["seed"] == 0 and run["params"] > 0 and run["steps"] >= 1 and run["step_time_s"] > 0
        assert set(run["per_site"]) == set(entry["sites"]) and "auroc" in run["site_mean"]
        assert {"auroc", "balanced_accuracy", "ece"} <= set(run["pooled_test"])
    assert entry["best_single"]["pooled"]["head"].startswith("single:")
    single_params = {r["head"]: r["params"] for r in entry["runs"]}
    assert single_params["single:tabular"] < single_params["concat"]  # frozen encoders are not counted
    best = {r["method"]: r for r in entry["summary"] if r["head"] == entry["best_single"][r["method"]]["head"]}
    assert all(r["delta_mean"] == 0.0 for r in best.values())

    markdown = (out / "results.md").read_text()
    for head in heads:
        for method in METHODS:
            assert f"| {key} | {head} | {method} |" in markdown
    assert "best single modality" in markdown and FEDERATED_LABEL in markdown
    assert len(entry["summary"]) == len(heads) * len(METHODS) and set(results["datasets"]) == {key}


def test_early_fusion_heads_train_federated_with_their_own_image_encoder(tmp_path):
    """FiLM and HyperFusion replace the image encoder (their config's ``encoders``): the
    federated arm must build that model too, not the default CNN."""
    out = tmp_path / "zoo"
    main(["--quick", "--datasets", "synthetic", "--heads", "film", "hyperfusion", "--missing", "0", "--max-samples", "400",
          "--override", "num_sites=2", "--out", str(out)])  # fmt: skip
    (entry,) = json.loads((out / "results.json").read_text())["datasets"].values()
    assert not entry.get("skipped"), entry.get("skipped")
    assert {(r["head"], r["method"]) for r in entry["runs"]} == {(h, m) for h in ("film", "hyperfusion") for m in METHODS}


def test_heads_expand_single_per_modality_and_pick_up_every_registered_name():
    assert expand_heads(["concat", "single"], ["image", "tabular"]) == [
        ("concat", "concat", None), ("single:image", "single", "image"), ("single:tabular", "single", "tabular")]
    assert expand_heads(["single:omics"], ["omics", "tabular"]) == [("single:omics", "single", "omics")]
    from fusion_models.fusion import FUSIONS

    labels = [label for label, _, _ in expand_heads(None, ["tabular", "omics"])]
    assert set(FUSIONS.names()) - {"single"} <= set(labels) and "single:omics" in labels


def test_synthetic_gets_one_variant_per_missing_fraction():
    args = parse_args(["--datasets", "synthetic", "gse7390_breast", "--quick"])
    found = {v.key: v for v in variants(args)}
    assert list(found) == ["synthetic/image_missing=0", "synthetic/image_missing=0.3", "synthetic/image_missing=0.6",
                           "gse7390_breast"]  # fmt: skip
    assert found["synthetic/image_missing=0"].missing == {}
    assert "+data.params.missing.image=0.6" in found["synthetic/image_missing=0.6"].overrides
    assert "num_sites=3" in found["gse7390_breast"].overrides


def test_unknown_dataset_is_refused():
    with pytest.raises(SystemExit):
        parse_args(["--datasets", "mnist"])


def test_an_early_fusion_head_is_refused_where_its_conditioned_encoder_has_no_modality():
    from benchmarks.fusion_zoo import _check_applies, fusion_config

    film = {"name": "film", "encoders": {"image": {"name": "cnn_film", "conditioned_on": "tabular"}}}
    _check_applies(film, ["image", "tabular"])
    with pytest.raises(ValueError, match="early fusion"):
        _check_applies(film, ["tabular", "omics"])
    assert fusion_config("single", "omics")["modality"] == "omics"
    assert fusion_config("concat", None)["name"] == "concat"


def test_the_federated_arm_reports_the_global_model_even_where_sites_personalise(tmp_path):
    """Sites that fine-tune report a second, personalised model; the zoo compares heads on the
    federated (global) model, so turning fine-tuning on must not change its figures."""
    common = ["--quick", "--datasets", "synthetic", "--heads", "concat", "--missing", "0", "--max-samples", "400",
              "--override", "num_sites=2"]  # fmt: skip
    figures = []
    for extra in ([], ["--override", "personalization=finetune", "--override", "personalization.min_train_positives=0"]):
        out = tmp_path / f"zoo{len(figures)}"
        main([*common, *extra, "--out", str(out)])
        (entry,) = json.loads((out / "results.json").read_text())["datasets"].values()
        figures.append({s: r["auroc"] for run in entry["runs"] if run["method"] == "federated"
                        for s, r in run["per_site"].items()})  # fmt: skip
    assert figures[0] == figures[1]
