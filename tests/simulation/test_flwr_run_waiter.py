"""`flwr run` started ahead (simulation/flwr_run_waiter.py): Flower's CLI is imported before
the arguments come, then Flower's own command runs with them."""

from __future__ import annotations

import time

from benchmarks.host_cpu import tree_cpu_s
from simulation.flower_runner import flower_environment
from simulation.processes import stop_process_group
from simulation.flwr_run_waiter import PrestartedFlwrRun


def test_the_cli_is_imported_before_the_arguments_come_then_flowers_command_runs(tmp_path):
    waiter = PrestartedFlwrRun(flower_environment(tmp_path))
    try:
        deadline = time.monotonic() + 60
        while (tree_cpu_s(waiter.process.pid) or 0.0) < 0.3 and time.monotonic() < deadline:  # Python alone is ~0.05 s
            time.sleep(0.05)
        assert waiter.process.poll() is None, "the waiter exited before it was given its arguments"
        assert (tree_cpu_s(waiter.process.pid) or 0.0) >= 0.3, "the waiter did not import Flower's CLI ahead"
        process = waiter.start(["--version"])
        output = process.stdout.read()
        assert process.wait(timeout=60) == 0, output
        assert "Flower version" in output
    finally:
        stop_process_group(waiter.process)


def test_a_waiter_never_given_arguments_exits_cleanly(tmp_path):
    waiter = PrestartedFlwrRun(flower_environment(tmp_path))
    waiter.process.stdin.close()
    assert waiter.process.wait(timeout=60) == 0
    assert waiter.process.stdout.read() == ""


def test_a_waiter_that_failed_on_its_import_reports_it_instead_of_breaking_the_pipe(tmp_path):
    fake = tmp_path / "fake" / "flwr"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('this flwr is broken')\n")
    env = {**flower_environment(tmp_path), "PYTHONPATH": str(fake.parent)}
    waiter = PrestartedFlwrRun(env)
    waiter.process.wait(timeout=60)
    process = waiter.start(["run"])
    assert process.returncode != 0
    assert "this flwr is broken" in process.stdout.read()
