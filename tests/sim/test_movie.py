"""The simulator's movies: the frames follow the planted motion, dose adds up, runs are reproducible."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
import scipy.ndimage
import starfile
import torch
from tests.conftest import DEVICES

from cryowarp.base.fourier import fourier_shift_2d
from cryowarp.sim import MovieSimSettings, MovieTruth, simulate_movie

# a small, fast specimen: two generated proteins (no β-galactosidase) in a 256² field
SMALL = dict(
    shape_yx=(256, 256),
    particle_models=(),
    protein_kinds=("globule", "dumbbell"),
    protein_masses_kda=(150.0,),
    particle_area_fraction=0.2,
)


def _parabola_vertex(values: list[float], step: float) -> float:
    """Vertex of the parabola through (−step, 0, +step) → values."""
    a, b, c = values
    return 0.5 * step * (a - c) / (a - 2 * b + c)


@pytest.mark.parametrize("device", DEVICES)
def test_global_motion_is_an_exact_shift_of_the_clean_image(device):
    s = MovieSimSettings(
        **SMALL,
        n_frames=6,
        local_amplitude_a=0.0,
        radiation_damage=False,
        shot_noise=False,
        initial_motion_a=5.0,
        drift_a_per_frame=0.7,
    )
    movie = simulate_movie(s, seed=3, device=device)
    counts = s.exposure_per_frame_e_per_a2 * s.pixel_size_a**2
    shifts = movie.truth.global_shifts_px_yx
    inner = (slice(16, -16), slice(16, -16))
    for f in (0, 5):
        frame = movie.frames[f].cpu() / counts
        errors = []
        for axis in (0, 1):
            res = []
            for delta in (-0.1, 0.0, 0.1):
                trial = shifts[f].clone().float()
                trial[axis] += delta
                res.append(
                    float(((fourier_shift_2d(movie.clean_image.cpu(), trial) - frame)[inner] ** 2).sum())
                )
            errors.append(_parabola_vertex(res, 0.1))
        # noise-free, Fourier-shifted on a padded canvas: the planted shift is the best one to 0.005 px
        assert max(abs(e) for e in errors) < 0.005, errors
        # and frame f really differs from the clean image by that shift (not by nothing)
        assert (
            float(((movie.clean_image.cpu() - frame)[inner] ** 2).mean())
            > 100 * res[1] / frame[inner].numel()
        )


def test_local_motion_matches_the_truth_field_everywhere():
    s = MovieSimSettings(
        **SMALL,
        n_frames=4,
        local_amplitude_a=3.0,
        initial_motion_a=2.0,
        radiation_damage=False,
        shot_noise=False,
    )
    movie = simulate_movie(s, seed=5)
    h, w = s.shape_yx
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    coords = torch.stack([yy, xx], -1).reshape(-1, 2)
    clean = movie.clean_image.double().numpy()
    inner = (slice(20, -20), slice(20, -20))
    for f in (0, 3):
        d_px = (movie.truth.displacement_a_yx(coords, f) / s.pixel_size_a).reshape(h, w, 2).numpy()
        local = movie.truth.motion.local_displacement_a_yx(coords, f).reshape(h, w, 2)
        assert float(local.abs().max()) > 1.0  # the local part is really there
        frame = movie.frames[f].double().numpy() / s.exposure_per_frame_e_per_a2
        res = []
        for scale in (0.9, 1.0, 1.1):
            # an independent interpolator (quintic spline) evaluates clean(x − s·d(x))
            sample = scipy.ndimage.map_coordinates(
                clean,
                [yy.numpy() - scale * d_px[..., 0], xx.numpy() - scale * d_px[..., 1]],
                order=5,
                mode="nearest",
            )
            res.append(float(((sample - frame)[inner] ** 2).sum()))
        # the truth's displacement is the best-fitting scale to 3 % (≤ 0.1 Å of ≤ 3 Å, well under the 0.3 Å
        # motion grading); the remaining ~1 % is bicubic resampling error of the local warp
        assert abs(_parabola_vertex(res, 0.1)) < 0.03, res


def test_displacement_gauge_and_truth_json_round_trip(tmp_path):
    s = MovieSimSettings(**SMALL, n_frames=8, local_amplitude_a=2.0, n_jumps=1)
    movie = simulate_movie(s, seed=1)
    g = movie.truth.global_displacement_a_yx
    torch.testing.assert_close(g.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    # local deformation: mean 0 over frames at a point, and over the pixel grid in a frame
    point = torch.tensor([[37.0, 201.0]])
    local = torch.stack([movie.truth.motion.local_displacement_a_yx(point, f)[0] for f in range(8)])
    torch.testing.assert_close(local.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    grid = torch.stack([yy, xx], -1).reshape(-1, 2)
    assert float(movie.truth.motion.local_displacement_a_yx(grid, 2).mean(0).abs().max()) < 1e-9
    # batches of frames and JSON round trip
    coords = torch.tensor([[10.0, 20.0], [100.0, 5.0], [250.0, 250.0]])
    frames = torch.tensor([0, 3, 7])
    d = movie.truth.displacement_a_yx(coords, frames)
    for i in range(3):
        torch.testing.assert_close(d[i], movie.truth.displacement_a_yx(coords[i : i + 1], int(frames[i]))[0])
    restored = MovieTruth.from_dict(json.loads(json.dumps(movie.truth.to_dict())))
    torch.testing.assert_close(restored.displacement_a_yx(coords, frames), d)
    with pytest.raises(IndexError, match="frame_index out of range: expected 0..7, found 0..8"):
        movie.truth.displacement_a_yx(coords, torch.tensor([0, 1, 8]))


def test_exposure_adds_up():
    s = MovieSimSettings(**SMALL, n_frames=10, exposure_per_frame_e_per_a2=0.8, pixel_size_a=1.5)
    movie = simulate_movie(s, seed=2)
    expected_per_frame = 0.8 * 1.5**2 * float(movie.clean_image.mean())
    per_frame = movie.frames.mean((1, 2))
    # Poisson: s.d. of a frame mean is sqrt(λ/N) ≈ 0.004; 5 s.d. (+ ≤1 % damage/motion edge effects)
    torch.testing.assert_close(
        per_frame, torch.full_like(per_frame, expected_per_frame), atol=0.02, rtol=0.01
    )
    total = float(movie.frames.sum()) / (256 * 256 * 1.5**2)
    assert total == pytest.approx(10 * 0.8 * float(movie.clean_image.mean()), rel=0.005)
    assert torch.equal(movie.frames, movie.frames.round())  # counts are integers


def test_same_seed_same_movie_different_seed_different_movie():
    s = MovieSimSettings(**SMALL, n_frames=3)
    a, b, c = simulate_movie(s, seed=9), simulate_movie(s, seed=9), simulate_movie(s, seed=10)
    assert torch.equal(a.frames, b.frames)
    assert a.truth.to_dict() == b.truth.to_dict()
    assert not torch.equal(a.frames, c.frames)
    assert a.truth.global_displacement_a_yx.tolist() != c.truth.global_displacement_a_yx.tolist()


def test_gain_defects_and_files(tmp_path):
    s = MovieSimSettings(
        **SMALL, n_frames=30, gain_sd=0.1, n_hot_pixels=5, n_dead_columns=2, exposure_per_frame_e_per_a2=2.0
    )
    movie = simulate_movie(s, seed=4)
    assert float(movie.gain.mean()) == pytest.approx(1.0, abs=1e-5)
    dead = movie.defect_mask.all(0)
    assert int(dead.sum()) == 2 and float(movie.frames[:, :, dead].sum()) == 0.0
    # raw counts carry 1/gain: the gain-corrected sum no longer correlates with the gain
    ok = ~movie.defect_mask
    raw = movie.frames.sum(0)[ok]
    corrected = (movie.frames.sum(0) * movie.gain)[ok]
    inv_gain = (1.0 / movie.gain)[ok]
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])  # noqa: E731
    assert corr(raw, inv_gain) > 0.3
    assert abs(corr(corrected, inv_gain)) < 0.05

    paths = movie.to_files(tmp_path, stem="sim")
    assert mrcfile.validate(str(paths["movie_mrc"]))
    with mrcfile.open(paths["movie_mrc"]) as mrc:
        assert mrc.data.dtype == np.uint16 and mrc.voxel_size.x == pytest.approx(1.0)
        np.testing.assert_array_equal(mrc.data, movie.frames.numpy())
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(paths["movie_tiff"]), movie.frames.numpy())
    with mrcfile.open(paths["gain"]) as mrc:
        np.testing.assert_allclose(mrc.data, movie.gain.numpy())
    motion = starfile.read(paths["motion_star"])
    np.testing.assert_allclose(
        motion["global_shift"]["rlnMicrographShiftX"],
        -movie.truth.global_displacement_a_yx[:, 1].numpy() / s.pixel_size_a,
        atol=1e-9,
    )
    assert motion["general"]["rlnMicrographDoseRate"] == 2.0
    particles = starfile.read(paths["particles_star"])["particles"]
    assert {
        "rlnCoordinateX",
        "rlnCoordinateY",
        "rlnAngleRot",
        "rlnAngleTilt",
        "rlnAnglePsi",
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnDefocusAngle",
        "rlnMicrographName",
    } <= set(particles.columns)
    np.testing.assert_allclose(particles["rlnCoordinateX"], movie.truth.particles.coords_px_xy[:, 0].numpy())
    np.testing.assert_allclose(
        (particles["rlnDefocusU"] + particles["rlnDefocusV"]) / 2e4, movie.truth.particles.defocus_um.numpy()
    )
    truth = MovieTruth.from_dict(json.loads(paths["truth_json"].read_text()))
    assert truth.to_dict() == movie.truth.to_dict()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="exposure_per_frame_e_per_a2"):
        MovieSimSettings(exposure_per_frame_e_per_a2=-1.0)
    with pytest.raises(ValueError, match="extra"):
        MovieSimSettings(frames=3)
    with pytest.raises(ValueError, match="unknown protein kind 'cube'"):
        simulate_movie(MovieSimSettings(shape_yx=(64, 64), particle_models=(), protein_kinds=("cube",)))
    with pytest.raises(ValueError, match="no particle species"):
        simulate_movie(MovieSimSettings(shape_yx=(64, 64), particle_models=(), protein_kinds=()))


def test_radiation_damage_follows_the_critical_exposure_curve():
    from cryowarp.base.fourier import radial_average_2d
    from cryowarp.base.optics import critical_exposure_e_per_a2

    common = dict(SMALL, shape_yx=(384, 384), n_frames=8, exposure_per_frame_e_per_a2=4.0, shot_noise=False)
    damaged = simulate_movie(MovieSimSettings(**common), seed=8)
    intact = simulate_movie(MovieSimSettings(**common, radiation_damage=False), seed=8)
    # same seed, same motion: only the damage differs
    assert damaged.truth.to_dict()["motion"] == intact.truth.to_dict()["motion"]
    counts = 4.0 * 1.0**2
    n = 384
    freq = torch.arange(n // 2 + 1) / n  # 1/Å at 1 Å/px
    for f in (1, 7):
        spec_d = torch.fft.rfft2(1.0 - damaged.frames[f] / counts)
        spec_i = torch.fft.rfft2(1.0 - intact.frames[f] / counts)
        power_d = radial_average_2d(spec_d.abs() ** 2)
        power_i = radial_average_2d(spec_i.abs() ** 2)
        # power falls as exp(−N/N_e(k)) with N the exposure at the middle of the frame (G&G 2015);
        # compared in bands of 8 rings, so that Thon-ring zeros (no power to compare) do not matter
        expected = power_i * torch.exp(-(f + 0.5) * 4.0 / critical_exposure_e_per_a2(freq))
        for start in range(n // 20, n // 6, 8):
            band = slice(start, start + 8)  # within 1/20 … 1/6 Å⁻¹
            ratio = float(power_d[band].sum() / expected[band].sum())
            # 5 %: the filter acts on the padded canvas, the ratio is taken on the cropped frame
            assert ratio == pytest.approx(1.0, abs=0.05), (f, start, ratio)


def test_eer_output_reads_back_as_the_same_frames(tmp_path):
    from cryowarp.io.movies import read_movie
    from cryowarp.sim.files import EerRawFrames

    s = MovieSimSettings(**{**SMALL, "shape_yx": (64, 96)}, n_frames=3, exposure_per_frame_e_per_a2=2.0)
    movie = simulate_movie(s, seed=12)
    raw = EerRawFrames(movie.frames, 10, seed=1)
    stacked = np.stack([raw[i] for i in range(len(raw))])
    assert stacked.max() == 1  # EER: at most one event per pixel and raw frame
    np.testing.assert_array_equal(stacked.reshape(3, 10, 64, 96).sum(1), movie.frames.numpy())
    paths = movie.to_files(tmp_path, stem="e", formats=("eer",))
    back = read_movie(paths["movie_eer"], eer_frames_per_group=20)
    torch.testing.assert_close(back.frames, movie.frames)
    assert back.pixel_size_a == pytest.approx(1.0)
    with pytest.raises(ValueError, match="EER needs integer electron counts"):
        EerRawFrames(movie.frames * 0.5 + 0.25)
