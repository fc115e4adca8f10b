"""3-D template matching in a tomogram made by WBP of a simulated, CTF-modulated, noisy tilt series."""

from __future__ import annotations

import functools

import pytest
import torch
from tests.templates._synthetic import blob_cluster, blob_volume

from cryowarp.base.geometry import angular_distance_deg, euler_zyz_to_matrix
from cryowarp.base.optics import ctf_2d
from cryowarp.templates import Match3DSettings, match_template_3d
from cryowarp.tomo import ctf_weight_3d, project_volume, tilt_matrices, weighted_backprojection

PIXEL_A = 8.0
COORDS_XYZ = [(20.0, 22.0, 16.0), (44.0, 42.0, 15.0)]
EULER_DEG = [(30.0, 60.0, 100.0), (200.0, 120.0, 10.0)]


@pytest.fixture(scope="module", params=[192, 40], ids=["one-subvolume", "tiled-40"])
def tomogram_and_result(request):
    blobs = blob_cluster()
    shape = (32, 64, 64)
    volume = torch.zeros(shape)
    for (x, y, z), euler in zip(COORDS_XYZ, EULER_DEG, strict=True):
        moved = blobs.clone()
        moved[:, :3] = blobs[:, :3] @ euler_zyz_to_matrix(*euler).T
        volume[int(z) - 12 : int(z) + 12, int(y) - 12 : int(y) + 12, int(x) - 12 : int(x) + 12] += (
            blob_volume(moved, 24, PIXEL_A)
        )
    mats = tilt_matrices(torch.arange(-60.0, 61.0, 3.0))
    series = project_volume(volume, mats)
    ctf = ctf_2d(3.0, 0.0, 0.0, pixel_size_a=PIXEL_A, shape_yx=(64, 64))
    series = -torch.fft.irfft2(torch.fft.rfft2(series) * ctf, s=(64, 64))  # particles dark
    series = series + torch.randn(series.shape, generator=torch.Generator().manual_seed(0)) * series.std()
    tomogram = -weighted_backprojection(series, mats, shape)  # protein positive
    weight = functools.partial(ctf_weight_3d, pixel_size_a=PIXEL_A, matrices=mats, defocus_um=3.0)
    settings = Match3DSettings(
        angular_step_deg=30.0, diameter_a=130.0, border_fraction=0.3, subvolume_size_px=request.param
    )
    calls = []
    result = match_template_3d(
        tomogram,
        PIXEL_A,
        blob_volume(blobs, 24, PIXEL_A),
        PIXEL_A,
        settings,
        fourier_weight=weight,
        progress=lambda d, t: calls.append((d, t)),
    )
    return result, calls


def test_planted_particles_found_in_3d(tomogram_and_result):
    result, calls = tomogram_and_result
    assert calls[-1][0] == calls[-1][1]
    top = result.matches.top(2)
    truth = torch.tensor(COORDS_XYZ, dtype=torch.float64)
    found = set()
    for xyz, euler in zip(top.coords_px, top.euler_deg, strict=True):
        dist = (truth - xyz).norm(dim=1)
        j = int(dist.argmin())
        found.add(j)
        # position within 1 voxel (measured ≤ 0.2); orientation within the 30° step (measured 8–18°)
        assert dist[j] < 1.0
        assert angular_distance_deg(euler_zyz_to_matrix(*euler), euler_zyz_to_matrix(*EULER_DEG[j])) <= 30.0
    assert found == {0, 1}
    assert result.matches.coords_px.shape[1] == 3


def test_bad_tomogram_is_rejected():
    with pytest.raises(ValueError, match="expected a tomogram"):
        match_template_3d(torch.zeros(8, 8), 1.0, torch.zeros(8, 8, 8), 1.0)
