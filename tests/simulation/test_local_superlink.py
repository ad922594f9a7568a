"""Finding the SuperLink that `flwr run . local` left running (the recipe itself runs in
test_flwr_recipe_e2e.py)."""

from __future__ import annotations

from simulation.local_superlink import find_local_superlinks


def test_no_local_superlink_is_found_for_a_fresh_flower_home(tmp_path):
    assert find_local_superlinks(flwr_home=tmp_path, port=1) == []
