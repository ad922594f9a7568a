"""A federation under privacy=central_dp, real ServerApp and ClientApp code on an in-process
grid: it finishes, writes the server's epsilon per round, and the sites train without DP-SGD."""

import json

import pytest
from opacus.accountants import RDPAccountant

from client.app import app as client_app
from server.app import main as server_main
from server.checkpoint import load_checkpoint
from server.default_config import default_run_settings
from simulation.inprocess_grid import run_server_in_process
from tests.conftest import write_image_sites
from tests.server.test_app import _with_splits


@pytest.mark.parametrize("clipping", ["fixed", "adaptive"])
def test_a_central_dp_run_finishes_and_writes_the_servers_epsilon_per_round(tmp_path, clipping):
    paths = write_image_sites(tmp_path / "sites", sites={"north": 50, "south": 40}, missing_image_every=4)
    _with_splits(paths)
    settings = default_run_settings(["rounds=2", "num_sites=2", "train.batch_size=8", "model.feature_dim=8", "bootstrap=0",
                                     "personalization=none", "privacy=central_dp", f"privacy.clipping={clipping}",
                                     "privacy.noise_multiplier=0.9", "privacy.clipping_norm=0.5"])  # fmt: skip
    run_dir = tmp_path / "run"
    run_server_in_process(server_main, client_app, {i + 1: {"manifest": str(p)} for i, p in enumerate(paths)},
                          {"config-json": settings.to_json(), "run-dir": str(run_dir)})  # fmt: skip
    federated = run_dir / "federated"
    assert json.loads((federated / "done.json").read_text()) == {"rounds": 2}
    assert load_checkpoint(federated / "global.pt")["round"] == 2
    written = json.loads((federated / "central_privacy.json").read_text())
    reference = RDPAccountant()
    for row in written["rounds"]:
        reference.step(noise_multiplier=0.9, sample_rate=1.0)
        assert row["epsilon"] == pytest.approx(reference.get_epsilon(delta=1e-5))
        assert (row["sampled"], row["aggregated"]) == (2, 2)
    assert [row["round"] for row in written["rounds"]] == [1, 2]
    assert written["settings"]["clipping"] == clipping and written["settings"]["expected_sites"] == 2
    assert written["rounds"][0]["clipping_norm"] == 0.5
    moved = written["rounds"][0]["next_clipping_norm"] != 0.5
    assert moved == (clipping == "adaptive")
    assert not (run_dir / "privacy").exists(), "no site-level DP-SGD ledger: the sites train without DP"
