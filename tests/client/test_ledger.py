"""The privacy ledger: typed lines, atomic appends, loud refusals, composition across processes."""

from __future__ import annotations

import json

import pytest
from flwr.app import ArrayRecord, RecordDict

from client import messages as keys
from client.ledger import LEDGER_FILE, LedgerEntry, LedgerError, PrivacyLedger, epsilon_of
from client.settings import PrivacySettings
from fusion_models.model import build_model
from tests.client.test_app import _config, _setup


def _entry(**changes) -> LedgerEntry:
    values = {"run_id": "1", "round": 1, "release": "round", "site": "a", "steps": 4, "sample_rate": 0.25,
              "noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-3, "accountant": "rdp", "epsilon": 1.5,
              "grad_sample_mode": "hooks", "recorded_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    return LedgerEntry(**{**values, **changes})


def test_entries_round_trip_and_loading_names_what_is_wrong():
    entry = _entry()
    assert LedgerEntry.from_dict(entry.to_dict()) == entry
    data = entry.to_dict()
    del data["delta"], data["steps"]
    with pytest.raises(LedgerError, match=r"missing keys \['steps', 'delta'\]"):
        LedgerEntry.from_dict(data, where="x")
    with pytest.raises(LedgerError, match="noise_multiplier must be a finite number"):
        LedgerEntry.from_dict({**entry.to_dict(), "noise_multiplier": "1.0"})
    with pytest.raises(LedgerError, match="schema_version 2"):
        LedgerEntry.from_dict({**entry.to_dict(), "schema_version": 2})


def test_appends_keep_every_line_and_compose(tmp_path):
    ledger = PrivacyLedger.open(tmp_path, "a")
    assert ledger.entries == () and ledger.epsilon(accountant="rdp", delta=1e-3) == 0.0
    ledger.append(_entry())
    ledger.append(_entry(round=2))
    again = PrivacyLedger.open(tmp_path, "a")
    assert again.entries == ledger.entries and again.history() == [(1.0, 0.25, 8)]
    assert again.epsilon(accountant="rdp", delta=1e-3) == epsilon_of([(1.0, 0.25, 8)], accountant="rdp", delta=1e-3)
    assert not list((tmp_path / "a").glob(".*.tmp")), "no temporary file left behind"
    with pytest.raises(LedgerError, match="site 'b'"):
        ledger.append(_entry(site="b"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text[:-10], "line 2: the last line is truncated"),
        (lambda text: text.replace('"steps": 4', '"steps": 4,,', 1), "line 1: not valid JSON"),
        (lambda text: "", "empty \\(0 bytes\\)"),
        (lambda text: text.replace('"delta": 0.001, ', "", 1), r"line 1: missing keys \['delta'\]"),
        (lambda text: text.replace('"site": "a"', '"site": "b"', 1), "line 1: a release of site 'b'"),
    ],
    ids=["truncated", "corrupted", "emptied", "missing-key", "other-site"],
)
def test_a_damaged_ledger_is_refused_loudly_and_never_reset(tmp_path, damage, message):
    ledger = PrivacyLedger.open(tmp_path, "a")
    ledger.append(_entry())
    ledger.append(_entry(round=2))
    path = tmp_path / "a" / LEDGER_FILE
    path.write_text(damage(path.read_text()))
    damaged = path.read_bytes()
    with pytest.raises(LedgerError, match=message) as error:
        PrivacyLedger.open(tmp_path, "a")
    assert str(path) in str(error.value) and "never delete" in str(error.value)
    assert path.read_bytes() == damaged, "the ledger is left as it was found"


def _train(manifest, features, spec, model, *, server_round, run_id, ledger_dir, settings):
    config = _config(features, spec, privacy=settings, rounds=3).to_record(**{keys.SERVER_ROUND: server_round})
    msg = RecordDict({keys.ARRAYS: ArrayRecord(model.state_dict()), keys.CONFIG: config})
    # a fresh Context (and run id) each call: a deployed site starts a new process per message
    from flwr.app import Context, Message

    from client.app import app as client_app

    context = Context(run_id=run_id, node_id=1, node_config={"manifest": str(manifest)}, state=RecordDict(),
                      run_config={"run-dir": str(ledger_dir.parent)})  # fmt: skip
    return client_app(Message(content=msg, dst_node_id=1, message_type="train"), context)


def test_the_ledger_survives_restarts_and_a_second_run_and_keeps_composing(tmp_path, task_identity):
    manifest, _, features, spec = _setup(tmp_path)
    model = build_model(spec, seed=0)
    settings = PrivacySettings(name="dp", noise_multiplier=1.2, budget=6.0)
    ledger_dir = tmp_path / "run" / "privacy"
    epsilons = []
    for run_id, server_round in ((7, 1), (7, 2), (8, 1)):  # two restarts, then a second run
        reply = _train(manifest, features, spec, model, server_round=server_round, run_id=run_id, ledger_dir=ledger_dir,
                       settings=settings)  # fmt: skip
        epsilons.append(reply.content[keys.METRICS][keys.EPSILON])
    entries = PrivacyLedger.open(ledger_dir, "a").entries
    assert [(e.run_id, e.round) for e in entries] == [("7", 1), ("7", 2), ("8", 1)]
    assert epsilons[0] < epsilons[1] < epsilons[2]
    history = [(e.noise_multiplier, e.sample_rate, e.steps) for e in entries]
    assert epsilons[2] == pytest.approx(epsilon_of(history, accountant="rdp", delta=entries[-1].delta))
    # Past the budget: the site refuses with a status, sends no arrays, and records nothing.
    for server_round in range(2, 40):
        reply = _train(manifest, features, spec, model, server_round=server_round, run_id=8, ledger_dir=ledger_dir,
                       settings=settings)  # fmt: skip
        if keys.STATUS in reply.content.config_records:
            break
    status = reply.content[keys.STATUS]
    assert status[keys.STATUS_CODE] == keys.BUDGET_REFUSAL and "privacy.budget 6" in status[keys.STATUS_REASON]
    assert reply.content.array_records == {}
    spent = PrivacyLedger.open(ledger_dir, "a").entries
    assert reply.content[keys.METRICS][keys.EPSILON] == pytest.approx(spent[-1].epsilon) and spent[-1].epsilon <= 6.0
    assert json.loads((ledger_dir / "a" / LEDGER_FILE).read_text().splitlines()[-1])["round"] == server_round - 1
