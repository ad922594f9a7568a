"""Stopping by pid (simulation/processes.py): a detached process and the children it left."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from simulation.processes import alive, stop_pid


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
