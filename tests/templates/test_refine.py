"""Local orientation refinement: an orientation between grid points is recovered within step/2."""

from __future__ import annotations

import functools

import torch
from tests.templates._synthetic import blob_cluster, blob_volume, planted_micrograph

from cryowarp.base.geometry import (
    angular_distance_deg,
    euler_zyz_to_matrix,
    matrix_to_euler_zyz,
    random_rotations,
)
from cryowarp.base.optics import ctf_2d
from cryowarp.templates import (
    CTFParameters,
    Match2DSettings,
    Match3DSettings,
    match_template_2d,
    match_template_3d,
    orientation_grid,
    orientation_matrices,
)
from cryowarp.templates.refine import axis_angle_to_matrix, local_rotation_offsets, refine_levels
from cryowarp.tomo import ctf_weight_3d, project_volume, tilt_matrices, weighted_backprojection


def farthest_from_grid(step_deg: float, seed: int, gap_deg: float | None = None) -> tuple[list[float], float]:
    """Of 3000 random orientations, the one farthest (geodesic) from every grid orientation.

    With ``gap_deg``: the one whose distance to the nearest grid orientation is closest to it.
    """
    grid = orientation_matrices(orientation_grid(step_deg))
    candidates = random_rotations(3000, generator=torch.Generator().manual_seed(seed))
    distance = angular_distance_deg(candidates[:, None], grid[None]).min(1).values
    i = int(distance.argmax()) if gap_deg is None else int((distance - gap_deg).abs().argmin())
    return matrix_to_euler_zyz(candidates[i]).tolist(), float(distance[i])


def error_deg(euler_a, euler_b) -> float:
    return float(angular_distance_deg(euler_zyz_to_matrix(*euler_a), euler_zyz_to_matrix(*euler_b)))


def test_local_rotation_lattice():
    offsets = local_rotation_offsets(30.0, 10.0)
    assert len(offsets) == 123  # integer points in a ball of radius 3
    torch.testing.assert_close(offsets[0], torch.eye(3, dtype=torch.float64))
    distance = angular_distance_deg(offsets, torch.eye(3, dtype=torch.float64))
    assert float(distance.max()) <= 30.0 + 1e-6
    # geodesic distance of exp([v]x) from the identity is |v|, and the matrices are rotations
    v = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    m = axis_angle_to_matrix(v)
    assert abs(float(angular_distance_deg(m, torch.eye(3, dtype=torch.float64))) - float(v.norm()) * 57.29578) < 1e-4
    torch.testing.assert_close(m @ m.T, torch.eye(3, dtype=torch.float64))
    assert refine_levels(15.0) == [(15.0, 5.0, 2), (5.0, 5.0 / 3.0, 1)]


def test_refinement_2d_recovers_an_orientation_between_grid_points():
    step = 20.0
    euler, gap = farthest_from_grid(step, seed=5)
    assert gap > step / 2  # no grid orientation lies within step/2 of the truth (measured 16.2°)
    blobs = blob_cluster()
    image = planted_micrograph(blobs, (160, 160), [(80.0, 80.0)], [euler], 4.0, noise_to_signal=0.5)
    template = blob_volume(blobs, 48, 4.0)
    ctf = CTFParameters(1.5, 0.1, 20.0)
    base = dict(angular_step_deg=step, diameter_a=150.0, border_fraction=0.5)
    coarse = match_template_2d(image, 4.0, template, 4.0, ctf, Match2DSettings(**base, refine_orientations=False))
    fine = match_template_2d(image, 4.0, template, 4.0, ctf, Match2DSettings(**base))
    assert fine.matches.meta["n_refined"] == len(fine.matches)
    for result in (coarse, fine):
        assert float((result.matches.coords_px[0] - torch.tensor([80.0, 80.0])).norm()) < 1.0
    assert error_deg(coarse.matches.euler_deg[0], euler) > step / 2  # bounded below by the gap
    # refined: within step/2 (measured 2.5°), and the refined score is the higher one (14.9 vs 11.7)
    assert error_deg(fine.matches.euler_deg[0], euler) <= step / 2
    assert float(fine.matches.scores[0]) >= float(coarse.matches.scores[0])
    # sub-pixel position from the refined correlation (measured 0.08 px off, coarse 0.8 px)
    assert float((fine.matches.coords_px[0] - torch.tensor([80.0, 80.0])).norm()) < 0.5


def test_refinement_3d_recovers_an_orientation_between_grid_points():
    step, pixel = 30.0, 8.0
    euler, gap = farthest_from_grid(step, seed=3, gap_deg=0.7 * step)
    assert gap > step / 2
    blobs = blob_cluster()
    shape = (32, 48, 48)
    moved = blobs.clone()
    moved[:, :3] = blobs[:, :3] @ euler_zyz_to_matrix(*euler).T
    volume = torch.zeros(shape)
    volume[4:28, 12:36, 12:36] = blob_volume(moved, 24, pixel)  # centre (x, y, z) = (24, 24, 16)
    mats = tilt_matrices(torch.arange(-60.0, 61.0, 3.0))
    series = project_volume(volume, mats)
    series = -torch.fft.irfft2(
        torch.fft.rfft2(series) * ctf_2d(3.0, 0.0, 0.0, pixel_size_a=pixel, shape_yx=shape[1:]), s=shape[1:]
    )
    series = series + torch.randn(series.shape, generator=torch.Generator().manual_seed(0)) * series.std()
    tomogram = -weighted_backprojection(series, mats, shape)
    weight = functools.partial(ctf_weight_3d, pixel_size_a=pixel, matrices=mats, defocus_um=3.0)
    settings = Match3DSettings(angular_step_deg=step, diameter_a=130.0, border_fraction=0.3, refine_max_peaks=2)
    result = match_template_3d(tomogram, pixel, blob_volume(blobs, 24, pixel), pixel, settings, fourier_weight=weight)
    best = result.matches.top(1)
    assert float((best.coords_px[0] - torch.tensor([24.0, 24.0, 16.0])).norm()) < 1.0
    # measured: refined 1.7° (coarse 21°), although no grid orientation is within 21° of the truth
    assert error_deg(best.euler_deg[0], euler) <= step / 2
