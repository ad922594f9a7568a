"""The start-up benchmark's split of the host's CPU time (benchmarks/host_cpu.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from benchmarks.host_cpu import PROC, HostCpu, between, tree_cpu_s

pytestmark = pytest.mark.skipif(not (PROC / "stat").exists(), reason="needs Linux's /proc")

# The child starts a grandchild that burns 0.5 s of CPU and exits (reaped by the child, so
# counted in the child's children's time), then writes the flag and waits to be stopped.
_CHILD = """
import subprocess, sys, time
subprocess.run([sys.executable, "-c", "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.5: pass"])
open(sys.argv[1], "w").write("burned")
time.sleep(60)
"""


def test_the_tree_holds_a_reaped_grandchilds_cpu_time(tmp_path):
    flag = tmp_path / "flag"
    host = HostCpu()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(flag)])
    try:
        deadline = time.monotonic() + 30
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert flag.exists(), "the child never finished its grandchild"
        split = host.split(child.pid)
    finally:
        child.kill()
        child.wait()
    assert 0.5 <= split["tree"] < 10, split
    assert all(split[k] >= 0 for k in ("others", "steal", "idle")), split


def test_a_gone_process_has_no_tree():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert tree_cpu_s(int(done.stdout)) is None
    assert HostCpu().split(int(done.stdout))["others"] is None


def test_phases_are_the_differences_between_consecutive_marks():
    marks = [("a", {"tree": 1.0, "idle": 0.5}), ("b", {"tree": 3.5, "idle": 0.75}), ("c", {"tree": 4.0, "idle": 2.0})]
    assert between(marks) == {"a": {"tree": 1.0, "idle": 0.5}, "b": {"tree": 2.5, "idle": 0.25},
                              "c": {"tree": 0.5, "idle": 1.25}}  # fmt: skip


def test_a_phase_after_an_unknown_figure_is_unknown():
    marks = [("a", {"tree": 1.0, "idle": None}), ("b", {"tree": 2.0, "idle": 0.5})]
    assert between(marks) == {"a": {"tree": 1.0, "idle": None}, "b": {"tree": 1.0, "idle": None}}
