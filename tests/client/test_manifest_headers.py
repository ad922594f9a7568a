"""The header-only file check of client/manifest.py (``read_manifest_folder(decode_files=False)``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.manifest import ManifestError, read_manifest_folder
from tests.client.test_manifest import _assert_reported, _png, _site


def test_folder_headers_only_reads_shapes_but_not_pixels(tmp_path: Path) -> None:
    """decode_files=False (the simulator's own check, before the sites decode their files):
    a wrong shape still fails, a truncated image passes there and fails the full check."""
    path, _ = _site(tmp_path, "site_a", n=6)
    good = (tmp_path / "img" / "site_a_1.png").read_bytes()
    (tmp_path / "img" / "site_a_1.png").write_bytes(good[: len(good) // 2])  # header intact, pixels cut
    assert [m.site for m in read_manifest_folder(tmp_path, decode_files=False)] == ["site_a"]
    with pytest.raises(ManifestError) as info:
        read_manifest_folder(tmp_path)
    _assert_reported(info.value, path, 3, "image", "cannot read the file")
    _png(tmp_path / "img" / "site_a_1.png", size=16)
    with pytest.raises(ManifestError) as info:
        read_manifest_folder(tmp_path, decode_files=False)
    _assert_reported(info.value, path, 3, "image", "found [3, 16, 16]")
