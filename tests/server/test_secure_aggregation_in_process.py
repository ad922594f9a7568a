"""A federation under secure_aggregation=secaggplus: real ServerApp and ClientApp code (Flower's
SecAgg+ workflow and secaggplus_mod) on an in-process grid. The server receives only masked
vectors, and the model it builds equals plain per-module aggregation of the same round, also
with a site that has no images and with a site that crashes mid-protocol."""

import json

import pandas as pd
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from client import handlers
from client.app import app as client_app
from client.messages import ARRAYS
from client.secure_aggregation import secure_aggregation_mod
from fusion_models.model import ModelSpec, build_model
from server.app import main as server_main
from server.checkpoint import load_checkpoint
from server.default_config import default_run_settings
from simulation import inprocess_grid
from simulation.inprocess_grid import run_server_in_process
from tests.conftest import write_image_sites
from tests.server.test_app import _with_splits

TOLERANCE = 2e-5  # SecAgg+ quantises each coordinate to 16 / 2**22 ~ 4e-6 per site


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    folder = tmp_path_factory.mktemp("secure_sites")
    paths = write_image_sites(folder, sites={"north": 50, "south": 40, "east": 45}, missing_image_every=4)
    _with_splits(paths)
    east = pd.read_csv(paths[2])
    east["image"] = ""  # a site without images: it never sends the image encoder
    east.to_csv(paths[2], index=False)
    return paths


def _crash_at_node(node: int) -> ClientApp:
    """The fedfusion ClientApp, except that ``node`` crashes when it trains."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return client_app(msg, context)

    @app.train(mods=[secure_aggregation_mod])
    def train(msg: Message, context: Context) -> Message:
        if context.node_id == node:
            raise RuntimeError("the site's process died")
        return handlers.train(msg, context)

    @app.evaluate()
    def evaluate_round(msg: Message, context: Context) -> Message:
        return handlers.evaluate_round(msg, context)

    @app.evaluate("final")
    def evaluate_final(msg: Message, context: Context) -> Message:
        return handlers.evaluate_final(msg, context)

    return app


def _run(tmp_path, paths, name, overrides, app=client_app):
    settings = default_run_settings(["rounds=1", "num_sites=3", "train.batch_size=8", "model.feature_dim=8", "bootstrap=0",
                                     "personalization=none", *overrides])  # fmt: skip
    run_dir = tmp_path / name
    run_server_in_process(server_main, app, {i + 1: {"manifest": str(p)} for i, p in enumerate(paths)},
                          {"config-json": settings.to_json(), "run-dir": str(run_dir)})  # fmt: skip
    federated = run_dir / "federated"
    assert json.loads((federated / "done.json").read_text()) == {"rounds": 1}
    return load_checkpoint(federated / "global.pt")["state_dict"], federated


def _initial(federated):
    checkpoint = load_checkpoint(federated / "global.pt")
    spec = ModelSpec.from_dict(checkpoint["model_spec"])
    return build_model(spec, seed=checkpoint["settings"]["seed"]).state_dict()


def _max_difference(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_secure_aggregation_builds_the_model_plain_per_module_aggregation_builds(tmp_path, sites, strategy, monkeypatch):
    received = []
    pull = inprocess_grid.InProcessGrid.pull_messages

    def recording(self, ids):
        replies = list(pull(self, ids))
        received.extend(replies)
        return replies

    plain, _ = _run(tmp_path, sites, "plain", [f"strategy={strategy}"])
    monkeypatch.setattr(inprocess_grid.InProcessGrid, "pull_messages", recording)
    secure, federated = _run(tmp_path, sites, "secure", [f"strategy={strategy}", "secure_aggregation=secaggplus"])
    assert _max_difference(plain, secure) < TOLERANCE
    assert _max_difference(plain, _initial(federated)) > 10 * TOLERANCE, "the round moved the model"

    masked = [m for m in received if not m.has_error() and RECORD_KEY_CONFIGS in m.content.config_records
              and Key.MASKED_PARAMETERS in m.content.config_records[RECORD_KEY_CONFIGS]]  # fmt: skip
    assert len(masked) == 3, "every site's training reply came back through SecAgg+'s masking stage"
    for message in received:
        if message.has_error():
            continue
        assert ARRAYS not in message.content.array_records, "no site sent its arrays in the clear"
        assert all(len(record) == 0 for record in message.content.array_records.values())
    rows = [json.loads(line) for line in (federated / "site_metrics.jsonl").read_text().splitlines()]
    train = {r["site"]: r for r in rows if r["kind"] == "train"}
    assert sorted(train) == ["east", "north", "south"]
    assert train["east"]["num-examples.encoders.image"] == 0 and train["north"]["num-examples.encoders.image"] > 0


def test_a_site_that_crashes_mid_protocol_is_unmasked_out_and_the_others_are_aggregated(tmp_path, sites):
    app = _crash_at_node(3)
    plain, _ = _run(tmp_path, sites, "plain", [], app=app)
    secure, federated = _run(tmp_path, sites, "secure", ["secure_aggregation=secaggplus"], app=app)
    assert _max_difference(plain, secure) < TOLERANCE
    assert _max_difference(plain, _initial(federated)) > 10 * TOLERANCE
    rows = [json.loads(line) for line in (federated / "site_metrics.jsonl").read_text().splitlines()]
    assert sorted(r["site"] for r in rows if r["kind"] == "train") == ["north", "south"]


@pytest.mark.parametrize("overrides, expected", [
    (["strategy=median"], "strategy=median needs each site's update"),
    (["strategy=krum"], "strategy=krum needs each site's update"),
    (["privacy=central_dp"], "privacy=central_dp clips each site's update"),
    (["num_sites=1"], "at least 2 sites"),
    (["secure_aggregation.reconstruction_threshold=1.5"], "reconstruction_threshold must be"),
    (["secure_aggregation.clipping_range=0"], "clipping_range must be a number > 0"),
])  # fmt: skip
def test_secure_aggregation_refuses_what_cannot_run_on_a_sum(overrides, expected):
    with pytest.raises(ValueError, match="secure_aggregation=secaggplus: .*" + expected.replace("+", r"\+")):
        default_run_settings(["secure_aggregation=secaggplus", *overrides])


def test_dp_sites_under_secure_aggregation_keep_their_ledger_and_a_declined_round_adds_nothing(tmp_path, sites):
    # sigma 1 on ~30 rows: epsilon 1.5-1.7 after round 1 and 2.0-2.2 after round 2, so a budget of 1.9 lets round 1 through and refuses round 2
    overrides = ["rounds=2", "privacy=dp_fixed_noise", "privacy.budget=1.9", "secure_aggregation=secaggplus"]
    settings = default_run_settings(["num_sites=3", "train.batch_size=8", "model.feature_dim=8", "bootstrap=0",
                                     "personalization=none", *overrides])  # fmt: skip
    run_dir = tmp_path / "run"
    run_server_in_process(server_main, client_app, {i + 1: {"manifest": str(p)} for i, p in enumerate(sites)},
                          {"config-json": settings.to_json(), "run-dir": str(run_dir)})  # fmt: skip
    federated = run_dir / "federated"
    rows = [json.loads(line) for line in (federated / "site_metrics.jsonl").read_text().splitlines()]
    kinds = {(r["round"], r["kind"]) for r in rows if r["kind"] in ("train", "refused")}
    assert kinds == {(1, "train"), (2, "refused")}
    assert all(r["train-epsilon"] > 0 for r in rows if r["kind"] in ("train", "refused"))
    assert load_checkpoint(federated / "global.pt")["round"] == 2
    for site in ("north", "south", "east"):
        releases = [json.loads(line) for line in (run_dir / "privacy" / site / "ledger.jsonl").read_text().splitlines()]
        assert [r["round"] for r in releases if r.get("round") is not None] == [1]


def test_a_site_refuses_to_send_a_secure_reply_outside_secagg(sites, monkeypatch):
    """A train message that asks for the secure layout but skips SecAgg+'s masking stage."""
    from flwr.app import ConfigRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from client.messages import CONFIG, SECURE_SCALE
    from simulation.inprocess_grid import InProcessGrid

    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1 if name != "_node_id" else 0)
    grid = InProcessGrid(client_app, {1: {"manifest": str(sites[0])}}, {})
    (reply,) = grid.send_and_receive([Message(RecordDict({CONFIG: ConfigRecord({SECURE_SCALE: 10.0})}), 1, "train")])
    assert reply.has_error() and "refusing to send the update unmasked" in reply.error.reason
