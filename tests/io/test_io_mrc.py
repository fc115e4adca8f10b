"""MRC reading/writing: real EPU files (FEI1/FEI2 headers), round trips, mrcfile.validate, bad files."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cryowarp.io.errors import CorruptFileError, InvalidDataError, TruncatedFileError, UnsupportedFormatError
from cryowarp.io.mrc import iter_mrc_frames, read_mrc, read_mrc_header, write_mrc


def test_epu29_fei2_header(shared_data):
    # ../shared/data/mrcfile/epu2.9_example.mrc: EPU 2.9, FEI2, 300 kV, 41.2 e/Å², 0.6666 Å, defocus 1.815 µm
    info = read_mrc_header(shared_data / "mrcfile/epu2.9_example.mrc")
    assert info.exttyp == "FEI2"
    assert info.shape_zyx == (1, 4096, 4096)
    assert info.mode == 6 and info.dtype == "uint16"
    assert info.extended_header_bytes == 909312
    fei = info.fei
    assert fei["voltage_kv"] == pytest.approx(300.0)
    assert fei["exposure_e_per_a2"] == pytest.approx(41.17, abs=0.01)  # 4.117e21 e/m²
    assert fei["pixel_size_a"] == pytest.approx(0.66655, abs=1e-4)
    assert fei["defocus_um"] == pytest.approx(1.8152, abs=1e-4)
    assert fei["magnification"] == 120000
    assert fei["camera_name"] == "BM-Falcon"
    assert fei["application"] == "EPU"
    assert fei["counting"] is True
    # the header pixel size agrees with the FEI record (float32 vs float64)
    assert info.pixel_size_a == pytest.approx(fei["pixel_size_a"], rel=1e-6)


def test_fei1_header_non_square(shared_data):
    # ../shared/data/mrcfile/fei-extended.mrc: FEI1, nx 3710 × ny 3838, 47.6 e/Å², 0.8538 Å, defocus −0.907 µm
    info = read_mrc_header(shared_data / "mrcfile/fei-extended.mrc")
    assert info.exttyp == "FEI1"
    assert info.shape_zyx == (1, 3838, 3710)
    fei = info.fei
    assert fei["voltage_kv"] == pytest.approx(300.0)
    assert fei["exposure_e_per_a2"] == pytest.approx(47.62, abs=0.01)
    assert fei["pixel_size_a"] == pytest.approx(0.85378, abs=1e-4)
    assert fei["defocus_um"] == pytest.approx(-0.9066, abs=1e-4)
    assert fei["camera_name"] == "EF-CCD"


def test_read_real_uint16_micrograph_matches_mrcfile(shared_data):
    path = shared_data / "mrcfile/fei-extended.mrc"
    image, pixel_size_a = read_mrc(path)
    assert image.dtype == np.float32 and image.shape == (3838, 3710)
    with mrcfile.mmap(path, permissive=True) as mrc:
        np.testing.assert_array_equal(
            image[1000:1010, 2000:2020], mrc.data[1000:1010, 2000:2020].astype(np.float32)
        )
    assert pixel_size_a == pytest.approx(0.85378, abs=1e-4)


def test_non_cubic_voxels_of_real_map(shared_data):
    # ../shared/data/mrcfile/EMD-3001.map: MicroED map, P21 with a 160-byte symmetry block
    info = read_mrc_header(shared_data / "mrcfile/EMD-3001.map")
    assert info.extended_header_bytes == 160
    np.testing.assert_allclose(info.voxel_size_a_xyz, (0.44825, 0.3925, 0.45875), atol=1e-5)
    volume, _ = read_mrc(shared_data / "mrcfile/EMD-3001.map")
    assert volume.shape == (25, 43, 73)


@pytest.mark.parametrize("float16", [False, True])
def test_stack_round_trip_is_valid_mrc(tmp_path, float16):
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(3, 10, 12)).astype(np.float16 if float16 else np.float32)
    path = write_mrc(
        tmp_path / "particles.mrcs",
        torch.from_numpy(stack.astype(np.float32)),
        1.31,
        float16=float16,
        stack=True,
    )
    assert mrcfile.validate(str(path), print_file=open(tmp_path / "validate.log", "w"))
    info = read_mrc_header(path)
    assert info.is_stack and info.mode == (12 if float16 else 2)
    back, pixel_size_a = read_mrc(path)
    np.testing.assert_array_equal(back, stack.astype(np.float32))  # exact: values are representable
    assert pixel_size_a == pytest.approx(1.31, rel=1e-6)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint16"])
def test_integer_modes_round_trip(tmp_path, dtype):
    values = np.arange(-5, 55, dtype=np.int64).reshape(6, 10) + (10 if dtype == "uint16" else 0)
    path = write_mrc(tmp_path / f"{dtype}.mrc", values, 0.5, dtype=dtype)
    assert mrcfile.validate(str(path), print_file=open(tmp_path / "validate.log", "w"))
    assert read_mrc_header(path).dtype == dtype
    back, _ = read_mrc(path, as_tensor=True)
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, torch.from_numpy(values.astype(np.float32)), rtol=0, atol=0)


def test_integer_overflow_is_refused(tmp_path):
    with pytest.raises(ValueError, match="do not fit uint16"):
        write_mrc(tmp_path / "x.mrc", np.full((4, 4), 70000.0), 1.0, dtype="uint16")


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_mrc(tmp_path / "a.mrc", np.ones((4, 4)), 1.0)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="2D image or a 3D"):
        write_mrc(path, np.ones(4), 1.0)
    assert path.read_bytes() == before


def test_iter_frames_matches_whole_read(tmp_path):
    stack = np.random.default_rng(1).normal(size=(7, 8, 9)).astype(np.float32)
    path = write_mrc(tmp_path / "s.mrcs", stack, 1.0, stack=True)
    chunks = list(iter_mrc_frames(path, chunk_frames=3))
    assert [start for start, _ in chunks] == [0, 3, 6]
    np.testing.assert_array_equal(torch.cat([c for _, c in chunks]).numpy(), stack)


def test_truncated_file_names_expected_and_found(tmp_path):
    path = write_mrc(tmp_path / "movie_0042.mrc", np.zeros((3, 10, 12), np.float32), 1.0, stack=True)
    data = path.read_bytes()
    path.write_bytes(data[: 1024 + 500])
    with pytest.raises(
        TruncatedFileError,
        match=r"movie_0042\.mrc: expected 3 sections of 12×10 float32 "
        r"\(1\.44 kB\) after the 1\.02 kB header, file holds 500 bytes — truncated",
    ):
        read_mrc(path)


def test_permissive_read_of_a_half_written_stack(tmp_path):
    stack = np.arange(3 * 10 * 12, dtype=np.float32).reshape(3, 10, 12)
    path = write_mrc(tmp_path / "growing.mrcs", stack, 1.0, stack=True)
    path.write_bytes(path.read_bytes()[: 1024 + 2 * 480 + 100])  # 2 complete sections and a bit
    with pytest.warns(UserWarning, match="reading the 2 complete section"):
        partial, _ = read_mrc(path, permissive=True)
    np.testing.assert_array_equal(partial, stack[:2])
    with pytest.warns(UserWarning):
        assert read_mrc_header(path, permissive=True).n_sections_in_header == 3


def test_big_endian_file_reads(tmp_path):
    path = tmp_path / "big.mrc"
    values = np.arange(20, dtype=np.float32).reshape(4, 5)
    with mrcfile.new(path) as mrc:
        mrc.set_data(values.astype(">f4"))
    back, _ = read_mrc(path)
    np.testing.assert_array_equal(back, values)


def test_empty_and_short_files(tmp_path):
    empty = tmp_path / "empty.mrc"
    empty.write_bytes(b"")
    with pytest.raises(TruncatedFileError, match="empty.mrc: file is empty"):
        read_mrc_header(empty)
    short = tmp_path / "short.mrc"
    short.write_bytes(b"\0" * 100)
    with pytest.raises(TruncatedFileError, match="expected a 1024-byte MRC header, file holds 100 bytes"):
        read_mrc_header(short)


def test_wrong_header_is_corrupt(tmp_path):
    path = tmp_path / "garbage.mrc"
    path.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptFileError, match="garbage.mrc"):
        read_mrc_header(path)


def test_complex_mode_is_unsupported(tmp_path):
    path = tmp_path / "complex.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((4, 4), np.complex64))
    with pytest.raises(UnsupportedFormatError, match=r"expected MRC mode 0, 1, 2, 6 or 12.*found mode 4"):
        read_mrc(path)


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_nan_is_refused(tmp_path):
    stack = np.zeros((3, 4, 4), np.float32)
    stack[2, 1, 1] = np.nan
    path = write_mrc(tmp_path / "nan.mrcs", stack, 1.0, stack=True)
    with pytest.raises(
        InvalidDataError, match=r"nan.mrcs: expected finite pixel values, found 1 NaN/inf .*\[2\]"
    ):
        read_mrc(path)


def test_zero_mean_image_passes_validation(tmp_path):
    # mrcfile averages in float32 (5.31e-6 here) but validates against float64 (5.18e-6) with atol 1e-8:
    # a zero-mean image with values ~1000 was refused before write_mrc stored the float64 mean
    image = (1000 * np.random.default_rng(5).normal(size=(927, 959))).astype(np.float32)
    image -= np.float32(image.mean(dtype=np.float64))
    path = write_mrc(tmp_path / "zero_mean.mrc", image, 4.0)
    assert mrcfile.validate(str(path), print_file=open(tmp_path / "validate.log", "w")), (
        tmp_path / "validate.log"
    ).read_text()


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 17), st.integers(1, 17)),
    dtype=st.sampled_from(["float32", "float16", "int16", "uint16", "int8"]),
    pixel_size_a=st.floats(0.1, 20.0),
)
def test_round_trip_any_shape_and_dtype(tmp_path_factory, shape, dtype, pixel_size_a):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 100, size=shape).astype(np.float32)
    path = write_mrc(tmp_path_factory.mktemp("h") / "x.mrcs", values, pixel_size_a, stack=True, dtype=dtype)
    back, got_pixel = read_mrc(path, squeeze=False)
    np.testing.assert_array_equal(back, values)  # integers 0..99 are exact in every mode
    assert got_pixel == pytest.approx(pixel_size_a, rel=1e-6)  # stored as float32 cell / grid


def test_atomic_writes_get_normal_permissions(tmp_path):
    """Files are created with the umask's permissions, not mkstemp's 0600, so other users can read them."""
    import os

    import numpy as np

    from cryowarp.io.mrc import write_mrc

    old = os.umask(0o022)
    try:
        out = write_mrc(tmp_path / "a.mrc", np.zeros((8, 8), np.float32), 1.0)
    finally:
        os.umask(old)
    assert (os.stat(out).st_mode & 0o777) == 0o644
