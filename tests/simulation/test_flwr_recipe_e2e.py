"""The README's "Running the Flower app directly" recipe, run as printed: its bash block,
with only FLWR_HOME, the sites and the output folder pointed at temporary folders (and the
local SuperLink's ports moved off the defaults, so that it cannot meet another one)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from simulation.ports import free_port
from simulation.prepare import prepare_sites
from tests.conftest import write_image_sites
from tests.simulation.test_prepare import _config
from tests.simulation.test_simulate_e2e import kill_leftovers

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SECTION = "### Running the Flower app directly"


def readme_recipe() -> list[str]:
    """The lines of the first bash block of the README section, continuations joined."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index(SECTION):], re.S)
    if block is None:
        raise AssertionError(f"the README section {SECTION!r} has no bash block")
    return block.group(1).replace("\\\n", " ").strip().splitlines()


def _point(lines: list[str], prefix: str, replacement: str) -> list[str]:
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(hits) == 1, f"the recipe must have one line starting with {prefix!r}; it has {len(hits)}"
    return lines[: hits[0]] + [replacement] + lines[hits[0] + 1 :]


def test_the_readme_recipe_trains_evaluates_and_stops_what_it_started(tmp_path):
    if not (REPO / ".venv" / "bin" / "flwr").exists():
        pytest.skip("the recipe runs the repository's .venv, which `make install` builds")
    source = tmp_path / "hospital_sites"
    write_image_sites(source, sites={"north": 60, "south": 50})
    _, manifests = prepare_sites(_config("data=manifests", f"data.dir={source}"), tmp_path / "prepared")
    sites, out, home = tmp_path / "prepared" / "sites", tmp_path / "out", tmp_path / "flwr_home"

    lines = readme_recipe()
    lines = _point(lines, "export FLWR_HOME=", f'export FLWR_HOME="{home}"')
    lines = _point(lines, "sites=", f'sites="{sites}"')
    lines = _point(lines, "out=", f'out="{out}"')
    assert lines[-1] == "fedfusion superlink stop" and lines[-2].startswith("flwr run . local --stream")
    script = "\n".join([*lines[:-1], "fedfusion superlink status", lines[-1]])

    marker = uuid.uuid4().hex
    env = {**os.environ, "FEDFUSION_TEST_RUN": marker, "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
           "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}  # fmt: skip
    env.pop("FLWR_HOME", None)
    try:
        result = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=600, stdin=subprocess.DEVNULL)  # fmt: skip
    finally:
        # one still finishing its shutdown is not left running (seen once on a loaded machine:
        # one process of the run, gone by the time anyone looked, remained at the check)
        leftovers = kill_leftovers(f"FEDFUSION_TEST_RUN={marker}", grace_s=15.0)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert not leftovers, f"processes left running after `fedfusion superlink stop`: {leftovers}"

    assert "[ROUND 3/3]" in output  # --stream follows the run to its end
    status = re.search(r"local SuperLink: pid (\d+), 127\.0\.0\.1:(\d+); log (\S+)", output)
    assert status and status.group(2) == env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"], output[-2000:]
    assert Path(status.group(3)).is_relative_to(home)
    assert f"stopped the local SuperLink (pid {status.group(1)})" in output
    assert (home / "config.toml").is_file()  # flwr's connection file went to the FLWR_HOME we set

    federated = out / "federated"
    assert json.loads((federated / "done.json").read_text()) == {"rounds": 3}
    assert json.loads((federated / "progress.json").read_text())["round"] == 3
    reported = json.loads((federated / "site_evaluation.json").read_text())
    assert reported["failures"] == [] and reported["round"] == 3
    scored = [e for e in reported["sites"] if e["model"] == "global"]  # the final global model, at every site
    assert sorted(e["site"] for e in scored) == sorted(m.site for m in manifests)
    assert all(0.0 <= e["metrics"]["auroc"] <= 1.0 for e in scored)
