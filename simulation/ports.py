"""Free TCP ports for the servers a run starts (the Ray head, its client server, the SuperLink).

A port is chosen here and bound seconds later by another process. ``bind(("", 0))`` would
pick it from the kernel's ephemeral range, where every outgoing connection on the machine
(Ray's own start-up opens dozens) and every other program's ``bind(0)`` take theirs, so one
of them can take it first and that server dies at start. Ports come instead from below the
ephemeral range and above Ray's worker ports, and never twice from one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port", "EPHEMERAL_RANGE_FILE", "LOWEST_PORT"]

#: Ray's workers take ports 10002-19999 by default (``ray start --min/max-worker-port``).
LOWEST_PORT = 20000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_TRIES = 200

_handed_out: set[int] = set()
# Not the `random` module's generator: runs seed it, and two seeded runs would pick alike.
_choose = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; other systems keep theirs elsewhere


def _bindable(port: int) -> bool:
    # the wildcard address: GCS listens on every interface, so any holder of the port blocks it
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port that nothing holds now, below the kernel's ephemeral range (so no outgoing
    connection or ``bind(0)`` takes it before its server binds it), never handed out before
    by this process. Falls back to the kernel's choice where that range starts too low."""
    high = _ephemeral_low()
    if high - LOWEST_PORT >= 1000:
        for _ in range(_TRIES):
            port = _choose.randrange(LOWEST_PORT, high)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
