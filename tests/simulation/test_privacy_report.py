"""`fedfusion privacy report`: releases printed, every epsilon recomputed from the records."""

import json

import pandas as pd
import pytest

from client.ledger import LEDGER_FILE, LedgerEntry, PrivacyLedger, epsilon_of
from simulation.plots import plot_epsilon
from simulation.privacy_report import main, privacy_summary, report_lines


def _write(ledger_dir, site, steps_per_round, rounds, *, sigma=1.0, q=0.25, delta=1e-3):
    ledger = PrivacyLedger.open(ledger_dir, site)
    history = []
    for r in range(1, rounds + 1):
        history.append((sigma, q, steps_per_round))
        ledger.append(LedgerEntry(run_id="7", round=r, release="round", site=site, steps=steps_per_round, sample_rate=q,
                                  noise_multiplier=sigma, max_grad_norm=1.0, delta=delta, accountant="rdp",
                                  epsilon=epsilon_of(history, accountant="rdp", delta=delta), grad_sample_mode="hooks",
                                  recorded_at="2026-01-01T00:00:00Z"))  # fmt: skip


def test_the_report_recomputes_every_epsilon_and_flags_a_forged_one(tmp_path, capsys):
    _write(tmp_path, "north", 4, 3)
    _write(tmp_path, "south", 2, 2)
    lines, ok = report_lines(tmp_path)
    assert ok and sum("reproduced" in line for line in lines) == 2
    assert main(["report", str(tmp_path)]) == 0 and "site north" in capsys.readouterr().out
    summary = privacy_summary(tmp_path)
    assert summary["north"]["last_round"] == 3 and summary["south"]["rounds_trained"] == 2
    path = tmp_path / "south" / LEDGER_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[-1]["epsilon"] /= 2  # a ledger that claims less than it spent
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines, ok = report_lines(tmp_path)
    assert not ok and any("MISMATCH" in line for line in lines)
    assert main(["report", str(tmp_path)]) == 1


def test_a_damaged_ledger_stops_the_report_with_its_file(tmp_path, capsys):
    _write(tmp_path, "north", 4, 2)
    path = tmp_path / "north" / LEDGER_FILE
    path.write_bytes(path.read_bytes()[:-3])
    assert main(["report", str(tmp_path)]) == 2
    assert str(path) in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_the_epsilon_plot_draws_each_site_and_is_absent_without_dp(tmp_path):
    rows = [{"method": "federated", "round": r, "site": s, "split": "train", "metric": "epsilon", "value": r * k}
            for r in (1, 2, 3) for s, k in (("north", 1.0), ("south", 2.0)) if not (s == "south" and r == 3)]
    path = plot_epsilon(pd.DataFrame(rows), tmp_path)
    assert path is not None and path.stat().st_size > 0
    no_dp = pd.DataFrame([{**rows[0], "metric": "loss"}])
    assert plot_epsilon(no_dp, tmp_path / "none") is None


@pytest.mark.parametrize("argv", [[], ["report"], ["show", "x"]])
def test_usage_errors(argv):
    assert main(argv) == 2


def _central_record(tmp_path, *, clipped: list[int], clipping: str = "fixed"):
    from server.central_accounting import CENTRAL_PRIVACY_FILE, CentralAccountant

    path = tmp_path / "federated" / CENTRAL_PRIVACY_FILE
    path.parent.mkdir(parents=True)
    accountant = CentralAccountant(noise_multiplier=1.2, sample_rate=0.5, delta=1e-5, path=path,
                                   settings={"clipping": clipping, "initial_clipping_norm": 1.0, "target_epsilon": 4.0})
    for r, c in enumerate(clipped, start=1):
        accountant.step(round=r, sampled=3, aggregated=3, clipped=c, clipping_norm=1.0, noise_std=0.4,
                        next_clipping_norm=1.0 + 0.1 * r)  # fmt: skip
    return accountant


def test_the_run_report_states_the_servers_epsilon_from_its_record(tmp_path):
    from client.settings import PrivacySettings
    from server.settings import CentralDPSettings
    from simulation.privacy_report import privacy_lines, run_privacy

    accountant = _central_record(tmp_path, clipped=[1, 0, 2], clipping="adaptive")
    central = CentralDPSettings(name="central_dp", target_epsilon=4.0)
    privacy = run_privacy(PrivacySettings(), tmp_path, (), central)
    assert privacy["central"]["epsilon"] == pytest.approx(accountant.epsilon())
    assert (privacy["central"]["rounds"], privacy["central"]["updates_clipped"]) == (3, 3)
    text = " ".join(privacy_lines(privacy, rounds=3))
    assert f"epsilon **{accountant.epsilon():.3f}** at delta 1e-05 after 3 rounds (sized for a target of 4)" in text
    assert "noise multiplier 1.2, site sample rate 0.5" in text and "C from 1 to 1.3" in text
    assert "3 of 9 site updates were clipped" in text


def test_a_central_run_without_its_record_says_no_epsilon_can_be_stated(tmp_path):
    from client.settings import PrivacySettings
    from server.settings import CentralDPSettings
    from simulation.privacy_report import privacy_lines, run_privacy

    privacy = run_privacy(PrivacySettings(), tmp_path, (), CentralDPSettings(name="central_dp"))
    assert privacy == {"name": "central_dp", "central": {}}
    assert "no epsilon can be stated" in privacy_lines(privacy, rounds=3)[0]
