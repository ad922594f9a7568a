"""read_file_array for series: irregular CSVs (values, masks, times, padding), regular CSVs and .npy."""

import numpy as np
import pytest

from client.file_reader import SERIES_HOURS, SERIES_STEPS, read_file_array


def _write(path, text):
    path.write_text(text)
    return path


def test_an_irregular_csv_gives_values_masks_and_times_in_time_order(tmp_path):
    # Rows out of order on purpose; "b" is missing at 0.5 h, "a" at 12 h.
    path = _write(tmp_path / "s.csv", "hours,a,b\n12.0,,7\n0.5,1.5,\n0.25,2,3\n")
    out = read_file_array(path, modality="series", length=5)
    assert out.shape == (5, 5) and out.dtype == np.float32  # [2C+1, T] with C=2
    np.testing.assert_allclose(out[0], [2, 1.5, 0, 0, 0])  # values of a, missing -> 0
    np.testing.assert_allclose(out[1], [3, 0, 7, 0, 0])
    np.testing.assert_array_equal(out[2], [1, 1, 0, 0, 0])  # mask of a
    np.testing.assert_array_equal(out[3], [1, 0, 1, 0, 0])  # mask of b
    np.testing.assert_allclose(out[4], np.array([0.25, 0.5, 12.0, 0, 0]) / SERIES_HOURS, rtol=1e-6)


def test_a_long_series_keeps_its_first_steps_in_time(tmp_path):
    hours = np.arange(10, dtype=float)[::-1]
    _write(tmp_path / "s.csv", "hours,a\n" + "".join(f"{h},{h * 10}\n" for h in hours))
    out = read_file_array(tmp_path / "s.csv", modality="series", length=4)
    np.testing.assert_allclose(out[0], [0, 10, 20, 30])
    np.testing.assert_array_equal(out[1], [1, 1, 1, 1])
    np.testing.assert_allclose(out[2] * SERIES_HOURS, [0, 1, 2, 3], atol=1e-5)


def test_the_default_length_is_series_steps(tmp_path):
    _write(tmp_path / "s.csv", "hours,a,b,c\n1,1,2,3\n")
    out = read_file_array(tmp_path / "s.csv", modality="series")
    assert out.shape == (7, SERIES_STEPS)
    assert out[3:6, 1:].sum() == 0 and out[6, 1:].sum() == 0  # padding: mask 0, time 0


def test_a_npy_series_is_fully_observed_with_regular_times(tmp_path):
    dense = np.arange(12, dtype=np.float32).reshape(4, 3)  # [T=4, C=3]
    np.save(tmp_path / "s.npy", dense)
    out = read_file_array(tmp_path / "s.npy", modality="series", length=6)
    assert out.shape == (7, 6)
    np.testing.assert_allclose(out[:3, :4], dense.T)
    np.testing.assert_array_equal(out[3:6], np.array([[1, 1, 1, 1, 0, 0]] * 3))
    np.testing.assert_allclose(out[6], [0, 0.25, 0.5, 0.75, 0, 0])


def test_a_csv_without_hours_is_regular_and_nan_cells_are_unobserved(tmp_path):
    _write(tmp_path / "s.csv", "a,b\n1,\n2,5\n")
    out = read_file_array(tmp_path / "s.csv", modality="series", length=3)
    np.testing.assert_allclose(out[:2], [[1, 2, 0], [0, 5, 0]])
    np.testing.assert_array_equal(out[2:4], [[1, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(out[4], [0, 0.5, 0])


@pytest.mark.parametrize(
    "text, message", [("hours,a\n1,high\n", "row 2, column 'a'"), ("hours,a\n,1\n", "column 'hours'")]
)
def test_bad_cells_are_named(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_file_array(_write(tmp_path / "s.csv", text), modality="series", length=3)


def test_series_files_of_a_column_must_share_their_variables(tmp_path):
    from client.manifest import ManifestError, read_manifest

    (tmp_path / "s1.csv").write_text("hours,hr,sbp\n0.5,80,120\n")
    (tmp_path / "s2.csv").write_text("hours,hr,dbp\n0.5,82,70\n")
    (tmp_path / "site.csv").write_text("sample_id,label,vitals\na,alive,s1.csv\nb,died,s2.csv\n")
    with pytest.raises(ManifestError, match=r"row 3, column 'vitals'.*differ from those of row 2"):
        read_manifest(tmp_path / "site.csv")
