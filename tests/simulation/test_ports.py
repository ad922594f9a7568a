"""Ports for the servers a run starts: outside the kernel's ephemeral range, never twice."""

from __future__ import annotations

import socket

from simulation import ports
from simulation.ports import LOWEST_PORT, free_port


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    low = int(ports.EPHEMERAL_RANGE_FILE.read_text().split()[0])
    given = [free_port() for _ in range(300)]
    assert len(set(given)) == len(given)
    assert all(LOWEST_PORT <= port < low for port in given)
    with socket.socket() as s:
        s.bind(("", given[-1]))  # nothing took it


def test_a_held_port_is_skipped(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        picks = iter([busy, busy, *range(40000, 40200)])
        monkeypatch.setattr(ports, "_ephemeral_low", lambda: 65000)
        monkeypatch.setattr(ports, "LOWEST_PORT", 1024)
        monkeypatch.setattr(ports._choose, "randrange", lambda a, b: next(picks))
        port = free_port()
    assert port != busy


def test_a_low_ephemeral_range_falls_back_to_the_kernels_choice(tmp_path, monkeypatch):
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("1024\t65535\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", range_file)
    given = {free_port() for _ in range(20)}
    assert len(given) == 20
    assert all(1024 <= port <= 65535 for port in given)
