"""``flwr run``, started before its arguments exist: the process imports Flower's CLI (about
1 s of CPU) while the run's sites are still prepared, then reads its arguments from stdin
and runs Flower's own ``flwr`` command with them.

Started as a separate process, as ``flwr run`` would be (:class:`PrestartedFlwrRun`), so that
the import runs while the sites are prepared and the app is submitted about as soon as they
are written, not one CLI import later (0.8 s earlier in ``benchmarks/results/startup/``; the
engine still starts when SuperExec, which the SuperLink starts, is up).
"""

from __future__ import annotations

import json
import subprocess
import sys

__all__ = ["PrestartedFlwrRun", "main"]


class PrestartedFlwrRun:
    """A ``flwr`` process waiting for its arguments; :meth:`start` gives them."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "simulation.flwr_run_waiter"], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip

    def start(self, args: list[str]) -> subprocess.Popen:
        """Run ``flwr <args>`` in the waiting process; returns it (its stdout is Flower's output)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(args) + "\n")
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # it already failed (say, on its import): its output and exit code tell why
        return self.process


def main() -> int:
    """Import Flower's CLI, wait for one line of JSON arguments, run ``flwr`` with them. An
    empty stdin (the run failed before it was submitted) exits at once."""
    from flwr.cli.app import app  # the import this process exists to do ahead

    line = sys.stdin.readline()
    if not line.strip():
        return 0
    sys.argv = ["flwr", *json.loads(line)]
    app()  # Typer exits with Flower's own exit code
    return 0


if __name__ == "__main__":
    sys.exit(main())
