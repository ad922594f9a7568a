"""`fedfusion simulate` starts the federation's processes before it reads its config for a run,
not for Hydra's flags (simulation/cli.py), and discards them whatever happens."""

from __future__ import annotations

import sys

import pytest

from simulation import cli, flower_runner


@pytest.mark.parametrize(("args", "prestarted"), [(["rounds=3"], True), ([], True), (["--cfg", "job"], False),
                                                  (["--multirun", "rounds=1,2"], False), (["--help"], False)])  # fmt: skip
def test_simulate_prestarts_only_for_a_run_and_always_discards(monkeypatch, args, prestarted):
    calls = []
    monkeypatch.setattr(flower_runner, "prestart_federation", lambda: calls.append("prestart"))
    monkeypatch.setattr(flower_runner, "discard_prestarted", lambda: calls.append("discard"))
    monkeypatch.setattr(cli, "_exit_if_overrides_do_not_compose", lambda rest: None)

    def failing_run() -> None:
        calls.append("run")
        raise SystemExit(2)  # as a config or data error ends it

    monkeypatch.setattr(cli, "_simulate_main", failing_run)
    monkeypatch.setattr(sys, "argv", ["fedfusion", "simulate", *args])
    with pytest.raises(SystemExit):
        cli.main()
    assert calls == (["prestart"] if prestarted else []) + ["run", "discard"]
