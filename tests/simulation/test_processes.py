"""Stopping by pid (simulation/processes.py): a detached process and the children it left, and
processes found by an entry of their environment after their parent exited."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from simulation.processes import alive, processes_with_environment, stop_by_environment, stop_pid


def test_stop_pid_stops_a_process_that_is_not_our_child_and_its_children(tmp_path):
    # A detached parent (its own session, like flwr's local SuperLink) whose child would outlive it.
    sleeper = "import time; time.sleep(300)"
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleeper!r}]); time.sleep(300)"
    # the parent must not hold the launcher's captured stdout, or run() would wait for it to exit
    launch = (f"import subprocess, sys; "
              f"print(subprocess.Popen([sys.executable, '-c', {parent!r}], start_new_session=True, "
              f"stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")
    launcher = subprocess.run([sys.executable, "-c", launch], capture_output=True, text=True, check=True)
    pid = int(launcher.stdout)
    deadline = time.monotonic() + 60  # a loaded machine starts Python slowly
    while not _children(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = _children(pid)
    assert child, "the detached parent did not start its child"
    stopped = stop_pid(pid, grace_s=10)
    assert pid in stopped and child[0] in stopped
    assert not alive(pid) and not alive(child[0])


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def start_orphan(env: dict[str, str]) -> int:
    """Start a sleeping process whose parent has exited (reparented, no one's descendant); its pid."""
    sleeper = "import time; time.sleep(300)"
    launch = (f"import subprocess, sys; "
              f"print(subprocess.Popen([sys.executable, '-c', {sleeper!r}], start_new_session=True, "
              f"stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")
    launcher = subprocess.run([sys.executable, "-c", launch], env=env, capture_output=True, text=True, check=True)
    return int(launcher.stdout)


def test_stop_by_environment_stops_orphans_holding_the_whole_entry_and_no_other(tmp_path):
    home = tmp_path / "flwr"
    mine = start_orphan({**os.environ, "FLWR_HOME": str(home)})
    other = start_orphan({**os.environ, "FLWR_HOME": f"{home}-other"})  # same prefix, another value
    try:
        assert mine in processes_with_environment(f"FLWR_HOME={home}")
        assert stop_by_environment(f"FLWR_HOME={home}", grace_s=5) == [mine]
        assert not alive(mine) and alive(other)
    finally:
        stop_by_environment(f"FLWR_HOME={home}-other", grace_s=5)
    assert not alive(other)
