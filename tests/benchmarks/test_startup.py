"""The start-up benchmark's reading of the SuperLink's access log (benchmarks/startup.py)."""

from __future__ import annotations

from datetime import datetime, timezone

from benchmarks.startup import _log_steps

_LOG = """\
\x1b[92mINFO \x1b[0m:      Starting Flower SuperLink
2026-12-07T01:14:04.857Z INFO [uvicorn.error] Uvicorn running on http://127.0.0.1:60261 (Press CTRL+C to quit)
2026-12-07T01:14:06.568Z INFO [uvicorn.access] 127.0.0.1:55870 - "POST /v1/control/start-run HTTP/1.1" 200
2026-12-07T01:14:06.579Z INFO [uvicorn.access] 127.0.0.1:55870 - "POST /v1/control/stream-logs HTTP/1.1" 200
2026-12-07T01:14:08.595Z INFO [uvicorn.access] 127.0.0.1:55884 - "POST /v1/runtime/pull-task-input HTTP/1.1" 200
2026-12-07T01:14:09.100Z INFO [uvicorn.access] 127.0.0.1:55884 - "POST /v1/runtime/pull-task-input HTTP/1.1" 200
"""


def test_steps_are_seconds_from_the_start_and_the_first_request_counts(tmp_path):
    log = tmp_path / "superlink.log"
    log.write_text(_LOG)
    start = datetime(2026, 12, 7, 1, 14, 2, 500000, tzinfo=timezone.utc).timestamp()
    steps = _log_steps(log, start)
    assert round(steps["submitted_s"], 3) == 4.068
    assert round(steps["engine_started_s"], 3) == 6.095


def test_a_missing_log_or_request_gives_none(tmp_path):
    assert _log_steps(tmp_path / "absent.log", 0.0) == {"submitted_s": None, "engine_started_s": None}
    (tmp_path / "short.log").write_text(_LOG.splitlines()[1] + "\n")
    assert _log_steps(tmp_path / "short.log", 0.0) == {"submitted_s": None, "engine_started_s": None}
