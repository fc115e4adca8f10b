"""SerialEM .mdoc and IMOD .tlt/.xf files (real ones from ../shared/data/mdocfile, etomofiles)."""

from __future__ import annotations

import numpy as np
import pytest

from cryowarp.io.errors import CorruptFileError, TruncatedFileError
from cryowarp.io.mdoc import TiltSeriesMetadata, mdoc_tilt_series, read_mdoc, read_tlt, read_xf, write_tlt


def test_tilt_series_mdoc(shared_data):
    # ../shared/data/mdocfile/tilt_series.mdoc: EMPIAR-10164 TS_01, 41 tilts −60…+60 in 3° steps,
    # 5.4 Å, tilt axis 85.3°
    mdoc = read_mdoc(shared_data / "mdocfile/tilt_series.mdoc")
    assert mdoc.global_data["ImageSize"] == (924, 958)
    ts = mdoc_tilt_series(mdoc)
    assert len(ts.tilt_deg) == 41
    np.testing.assert_allclose(ts.tilt_deg, np.arange(-60, 61, 3), atol=0.01)
    assert ts.tilt_axis_deg == 85.3 and ts.pixel_size_a == 5.4
    assert ts.nominal_defocus_um == 4.0  # TargetDefocus = −4 (SerialEM: negative = underfocus)
    # dose-symmetric acquisition: 0° first; the ±60° tilts come last
    assert ts.acquisition_order[ts.tilt_deg.index(min(ts.tilt_deg, key=abs))] == 0
    assert max(ts.acquisition_order[0], ts.acquisition_order[-1]) == 40
    assert sorted(ts.acquisition_order) == list(range(41))
    assert ts.sub_frame_paths[20] == "TS_01_000_0.0.mrc"
    assert TiltSeriesMetadata.from_dict(ts.to_dict()) == ts


def test_pre_exposure_accumulates_in_acquisition_order(tmp_path):
    text = "PixelSpacing = 1.0\n\n"
    # acquired in the order 0°, +3°, −3° with 2, 3, 4 e/Å²
    for z, (tilt, dose, time) in enumerate([(0, 2, "10:00:00"), (3, 3, "10:01:00"), (-3, 4, "10:02:00")]):
        text += f"[ZValue = {z}]\nTiltAngle = {tilt}\nExposureDose = {dose}\nDateTime = 01-Jan-24  {time}\n\n"
    (tmp_path / "ts.mdoc").write_text(text)
    ts = mdoc_tilt_series(read_mdoc(tmp_path / "ts.mdoc"))
    assert ts.tilt_deg == [-3.0, 0.0, 3.0]
    assert ts.acquisition_order == [2, 0, 1]
    assert ts.pre_exposure_e_per_a2 == [5.0, 0.0, 2.0]


@pytest.mark.parametrize(
    "name",
    [
        "frame_set_single.mdoc",
        "frame_set_multiple.mdoc",
        "montage_section.mdoc",
        "montage_section_multiple.mdoc",
    ],
)
def test_other_real_mdocs_parse(shared_data, name):
    mdoc = read_mdoc(shared_data / "mdocfile" / name)
    assert len(mdoc.sections) >= 1
    assert {"section_kind", "section_index", "TiltAngle"} <= set(mdoc.sections.columns)


def test_frame_set_mdoc_values(shared_data):
    mdoc = read_mdoc(shared_data / "mdocfile/frame_set_single.mdoc")
    row = mdoc.sections.iloc[0]
    assert row["section_kind"] == "FrameSet" and row["PixelSpacing"] == 1.2827
    assert row["FrameDosesAndNumber"] == (0.63824, 12)
    assert mdoc.global_data["Voltage"] == 300


def test_tlt_and_xf(shared_data, tmp_path):
    # ../shared/data/etomofiles/TS_001: 40 views, −57.1°…+59.8°
    angles = read_tlt(shared_data / "etomofiles/TS_001/TS_001.tlt")
    assert (
        len(angles) == 40
        and angles[0] == pytest.approx(-57.12)
        and angles[-1] == pytest.approx(59.8, abs=0.05)
    )
    xf = read_xf(shared_data / "etomofiles/TS_001/TS_001.xf")
    assert xf.shape == (40, 2, 3)
    np.testing.assert_allclose(xf[0], [[0.1020875, 0.9947760, 2.395], [-0.9947760, 0.1020875, -3.871]])
    # each xf is a rotation (det 1 to IMOD's 7 decimals, magnification ≈ 1)
    np.testing.assert_allclose(np.linalg.det(xf[:, :, :2]), 1.0, atol=0.02)
    back = read_tlt(write_tlt(tmp_path / "a.tlt", angles))
    np.testing.assert_allclose(back, angles, atol=0.005)


def test_bad_tilt_files(tmp_path):
    (tmp_path / "empty.tlt").write_text("\n")
    with pytest.raises(TruncatedFileError, match="empty.tlt: expected one tilt angle per line"):
        read_tlt(tmp_path / "empty.tlt")
    (tmp_path / "bad.xf").write_text("1 0 0 1 0\n")
    with pytest.raises(CorruptFileError, match=r"bad.xf: line 1: expected 6 numbers .* found 5"):
        read_xf(tmp_path / "bad.xf")
    (tmp_path / "bad.mdoc").write_text("PixelSpacing = 1\nthis is not serialem\n")
    with pytest.raises(CorruptFileError, match=r"bad.mdoc: line 2: expected 'key = value'"):
        read_mdoc(tmp_path / "bad.mdoc")
