"""The `flwr` process started before its arguments are known (simulation/waiting_flwr.py)."""

from __future__ import annotations

import pytest

from simulation.flower_runner import flower_environment, stop_process_group
from simulation.waiting_flwr import WaitingFlwr


@pytest.fixture()
def waiting(tmp_path):
    flwr = WaitingFlwr(flower_environment(tmp_path))
    yield flwr
    flwr.close()
    stop_process_group(flwr.process)


def test_runs_flowers_own_cli_with_the_arguments_given_later(waiting):
    process = waiting.start(["--version"])
    output = process.stdout.read()
    assert process.wait(timeout=60) == 0
    assert "Flower version: 1.42" in output


def test_a_failing_command_keeps_its_exit_code(waiting):
    process = waiting.start(["run", "/nonexistent-app-dir", "no-such-connection"])
    process.stdout.read()
    assert process.wait(timeout=60) != 0


def test_a_process_never_given_a_command_exits_cleanly(waiting):
    waiting.close()
    assert waiting.process.wait(timeout=60) == 0


def test_a_second_command_is_refused(waiting):
    waiting.start(["--version"]).stdout.read()
    with pytest.raises(RuntimeError, match="already ran"):
        waiting.start(["--version"])
