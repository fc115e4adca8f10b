"""Tilt series: dose-symmetric order, geometry consistent with the true volume, files IMOD/Warp can read."""

from __future__ import annotations

import math

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from cryowarp.sim import interaction_constant_rad_per_v_a
from cryowarp.sim.tilt_series import TiltSeriesSimSettings, TiltSeriesTruth, simulate_tilt_series

SMALL = dict(
    shape_yx=(192, 192),
    pixel_size_a=4.0,
    tilt_min_deg=-45.0,
    tilt_max_deg=45.0,
    tilt_step_deg=15.0,
    particle_models=(),
    protein_kinds=("globule", "dumbbell"),
    protein_masses_kda=(600.0,),
    ice_thickness_a=600.0,
    ice_thickness_variation=0.0,
    particle_area_fraction=0.25,
)


def test_dose_symmetric_order():
    s = TiltSeriesSimSettings(tilt_min_deg=-9, tilt_max_deg=9, tilt_step_deg=3, dose_symmetric_group=2)
    assert s.tilt_angles_deg() == [-9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0]
    # Hagen: 0, then two on the positive branch, two on the negative, ...
    assert s.acquisition_order() == [0.0, 3.0, 6.0, -3.0, -6.0, 9.0, -9.0]
    with pytest.raises(ValueError, match="tilt range"):
        TiltSeriesSimSettings(tilt_min_deg=10, tilt_max_deg=-10).tilt_angles_deg()


@pytest.fixture(scope="module")
def series():
    return simulate_tilt_series(TiltSeriesSimSettings(**SMALL), seed=3)


def test_exposure_and_defocus_bookkeeping(series):
    t = series.truth
    assert t.tilt_angles_deg.tolist() == [-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0]
    # prior exposure = position in the acquisition order × 3 e/Å² per tilt
    assert t.prior_exposure_e_per_a2.tolist() == [18.0, 12.0, 9.0, 0.0, 3.0, 6.0, 15.0]
    # counts per pixel: 3 e/Å² × 16 Å² × exp(−slab/3500 Å) with the slab 600/cos θ thick
    for i, angle in enumerate(t.tilt_angles_deg.tolist()):
        expected = 3.0 * 16.0 * math.exp(-600.0 / math.cos(math.radians(angle)) / 3500.0)
        assert float(series.images[i].mean()) == pytest.approx(
            expected * float(series.clean_images[i].mean()), rel=0.01
        )
    # the defocus plane tilts with the stage: tan θ · pixel size per pixel along x (ψ = 0: axis = y)
    torch.testing.assert_close(
        t.defocus_gradient_um_per_px_xy[:, 0], torch.tan(torch.deg2rad(t.tilt_angles_deg)) * 4e-4
    )
    # particle defocus: D_t + 1e-4·q_z, q = R_t·p (Warp)
    dz = t.particle_defocus_um()
    q = torch.einsum("tij,nj->tni", t.tilt_matrices(), t.particles_xyz_a)
    torch.testing.assert_close(dz, t.defocus_um[:, None] + q[..., 2] * 1e-4)


def test_particles_project_where_the_geometry_says(series):
    t = series.truth
    proj = t.project_px_xy(t.particles_xyz_a)  # (T, P, 2)
    flipped = TiltSeriesTruth(**{**t.__dict__, "tilt_angles_deg": -t.tilt_angles_deg}).project_px_xy(
        t.particles_xyz_a
    )
    h, w = t.shape_yx
    for i in range(len(t.tilt_angles_deg)):
        lowpass = torch.nn.functional.avg_pool2d(series.phase_images_rad[i][None, None], 5, 1, 2)[0, 0]

        def mean_at(points, lowpass=lowpass):
            ok = (points[:, 0] > 8) & (points[:, 0] < w - 8) & (points[:, 1] > 8) & (points[:, 1] < h - 8)
            return float(lowpass[points[ok, 1].round().long(), points[ok, 0].round().long()].mean())

        # the projected particle centres hold high projected potential (above the 80th percentile) ...
        assert mean_at(proj[i]) > float(lowpass.quantile(0.8))
        # ... and the wrong tilt handedness puts them elsewhere (heights up to ±240 Å move them ≥ 20 px)
        if abs(float(t.tilt_angles_deg[i])) >= 30:
            assert mean_at(flipped[i]) < 0.7 * mean_at(proj[i])


def test_true_volume_projects_to_the_zero_tilt_phase(series):
    t = series.truth
    zero = int(t.tilt_angles_deg.abs().argmin())
    sigma = interaction_constant_rad_per_v_a(300.0)
    # volume in V, voxel 8 Å: its z-projection × voxel × σ is the phase (rad) at 8 Å sampling
    projected = series.volume_v.sum(0) * t.volume_pixel_size_a * sigma
    phase = torch.nn.functional.avg_pool2d(series.phase_images_rad[zero][None, None], 2)[0, 0]
    # compare at low resolution (32 Å) where the ice is flat and the one-shape volume kernel is exact
    blur = lambda img: torch.nn.functional.avg_pool2d(img[None, None], 4)[0, 0]  # noqa: E731
    a, b = blur(projected), blur(phase)
    corr = float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
    assert corr > 0.98, corr
    # the same total phase (∫φ d²r, rad·Å²) in the volume and in the image, to 2 % (the window's ice mean)
    total_volume = float(projected.sum()) * t.volume_pixel_size_a**2
    total_image = float(series.phase_images_rad[zero].sum()) * t.pixel_size_a**2
    assert total_volume == pytest.approx(total_image, rel=0.02)


def test_files(series, tmp_path):
    paths = series.to_files(tmp_path, stem="ts")
    assert mrcfile.validate(str(paths["stack"])) and mrcfile.validate(str(paths["volume"]))
    angles = [float(v) for v in paths["tlt"].read_text().split()]
    assert angles == series.truth.tilt_angles_deg.tolist()
    mdoc = paths["mdoc"].read_text()
    mdoc_angles = [float(line.split("=")[1]) for line in mdoc.splitlines() if line.startswith("TiltAngle")]
    assert mdoc_angles == angles
    assert mdoc.count("[ZValue =") == len(angles)
    with mrcfile.open(paths["volume"]) as mrc:
        assert mrc.data.shape == series.truth.volume_shape_zyx
        assert float(mrc.voxel_size.x) == pytest.approx(8.0)
    star = starfile.read(paths["particles_star"])
    d, h, w = series.truth.volume_shape_zyx
    np.testing.assert_allclose(
        star["rlnCoordinateZ"], series.truth.particles_xyz_a[:, 2].numpy() / 8.0 + (d - 1) / 2
    )
    import json

    back = TiltSeriesTruth.from_dict(json.loads(paths["truth_json"].read_text()))
    torch.testing.assert_close(
        back.project_px_xy(back.particles_xyz_a), series.truth.project_px_xy(series.truth.particles_xyz_a)
    )
