"""simulation/run.py: what one repeat prints before its federation starts."""

from __future__ import annotations

import contextlib
import io

import pytest
from rich.console import Console

from server.default_config import _compose
from simulation import run
from simulation.config import SimulationConfig


class _Stop(Exception):
    """Raised where the federation would start: everything before it has been printed."""


def _printed_before_the_federation(tmp_path, monkeypatch, *, first_repeat: bool) -> str:
    def no_federation(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(run, "_run_federation", no_federation)
    monkeypatch.setattr(run, "federation_engine", lambda run_dir: contextlib.nullcontext())
    config = SimulationConfig.from_cfg(_compose(["data=synthetic", "num_sites=2", "data.params.n_samples=200"]))
    out = io.StringIO()
    with pytest.raises(_Stop):
        run._simulate_once(config, tmp_path / "repeat", Console(file=out, width=200), first_repeat=first_repeat)
    return out.getvalue()


def test_the_privacy_warning_prints_in_the_first_repeat_only(tmp_path, monkeypatch):
    first = _printed_before_the_federation(tmp_path / "first", monkeypatch, first_repeat=True)
    later = _printed_before_the_federation(tmp_path / "later", monkeypatch, first_repeat=False)
    line = "WARNING: No differential privacy (privacy=none): each site's updates leave it unprotected."
    assert first.count(line) == 1
    assert "differential privacy" not in later
    assert "synthetic" in later  # the repeat did print its data banner
