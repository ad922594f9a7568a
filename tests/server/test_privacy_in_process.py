"""A DP federation, real ServerApp and ClientApp code on an in-process grid: a site past its
budget refuses its rounds and the run goes on without it."""

import json

import pytest

from client.app import app as client_app
from client.ledger import PrivacyLedger
from server.app import main as server_main
from server.checkpoint import load_checkpoint
from server.default_config import default_run_settings
from simulation.inprocess_grid import run_server_in_process
from simulation.privacy_report import privacy_summary
from tests.conftest import write_image_sites
from tests.server.test_app import _with_splits


def test_a_site_past_its_budget_refuses_and_the_run_continues_without_it(tmp_path):
    paths = write_image_sites(tmp_path / "sites", sites={"north": 50, "south": 40}, missing_image_every=4)
    _with_splits(paths)
    settings = default_run_settings(["rounds=3", "num_sites=2", "train.batch_size=8", "model.feature_dim=8", "bootstrap=0",
                                     "privacy=dp_fixed_noise", "privacy.budget=50", "personalization=none"])  # fmt: skip
    run_dir = tmp_path / "run"
    # south's own node config caps it at an epsilon its first round fits and its second does not
    nodes = {1: {"manifest": str(paths[0])}, 2: {"manifest": str(paths[1]), "privacy-budget": 2.0}}
    run_server_in_process(server_main, client_app, nodes, {"config-json": settings.to_json(), "run-dir": str(run_dir)})
    federated = run_dir / "federated"
    assert json.loads((federated / "done.json").read_text()) == {"rounds": 3}
    assert load_checkpoint(federated / "global.pt")["round"] == 3
    trained, refused = {}, {}
    for line in (federated / "site_metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["kind"] == "train":
            trained.setdefault(row["site"], []).append((row["round"], row["train-epsilon"]))
        if row["kind"] == "refused":  # the server records each refusal with the epsilon spent so far
            refused.setdefault(row["site"], []).append((row["round"], row["train-epsilon"]))
    assert [r for r, _ in refused["south"]] == [2, 3] and "north" not in refused
    assert refused["south"][0][1] == pytest.approx(trained["south"][0][1])
    assert [r for r, _ in trained["north"]] == [1, 2, 3]
    assert [r for r, _ in trained["south"]] == [1], "south refused rounds 2 and 3"
    assert trained["north"][0][1] < trained["north"][2][1]
    ledgers = privacy_summary(run_dir / "privacy")
    assert ledgers["south"]["last_round"] == 1 and ledgers["south"]["epsilon"] <= 2.0
    assert ledgers["north"]["rounds_trained"] == 3 and ledgers["north"]["mismatches"] == []
    assert ledgers["north"]["epsilon"] == pytest.approx(trained["north"][-1][1])
    assert len(PrivacyLedger.open(run_dir / "privacy", "south").entries) == 1


def test_a_dp_run_is_refused_before_round_1_when_the_task_is_survival(tmp_path):
    from server.settings import RunSettings

    with pytest.raises(ValueError, match="Cox partial likelihood"):
        RunSettings.from_config({**_resolved(), "task": {"name": "survival"}})


def _resolved():
    from server.default_config import compose_config

    return compose_config(["privacy=dp", "personalization=none"])
