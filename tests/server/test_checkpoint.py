import pytest
import torch

from server import checkpoint
from server.checkpoint import load_checkpoint, save_checkpoint


def _save(path, value: float):
    return save_checkpoint(path, state_dict={"w": torch.full((3,), value)}, round=2, model_spec={"a": 1},
                           feature_spec="{}", settings={"rounds": 2})


def test_round_trip(tmp_path):
    path = _save(tmp_path / "global.pt", 1.5)
    loaded = load_checkpoint(path)
    assert loaded["round"] == 2 and torch.equal(loaded["state_dict"]["w"], torch.full((3,), 1.5))
    assert loaded["model_spec"] == {"a": 1} and loaded["settings"] == {"rounds": 2}


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = _save(tmp_path / "global.pt", 1.0)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(OSError):
        _save(path, 2.0)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.full((3,), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["global.pt"]  # no temporary file left


def test_missing_keys_are_named(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
