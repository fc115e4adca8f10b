"""2-D template matching: planted particles at known positions and orientations are found."""

from __future__ import annotations

import json

import pytest
import torch
from tests.templates._synthetic import blob_cluster, blob_volume, planted_micrograph

from cryowarp.base.geometry import angular_distance_deg, euler_zyz_to_matrix
from cryowarp.templates import CTFParameters, Match2DSettings, TemplateMatches, match_template_2d, tile_layout

PIXEL_A = 4.0
COORDS_XY = [(70.0, 80.0), (180.0, 95.0), (120.0, 185.0)]
EULER_DEG = [(30.0, 60.0, 100.0), (200.0, 120.0, 10.0), (300.0, 20.0, 250.0)]


@pytest.fixture(scope="module")
def planted():
    blobs = blob_cluster()
    image = planted_micrograph(blobs, (256, 256), COORDS_XY, EULER_DEG, PIXEL_A, noise_to_signal=1.0)
    template = blob_volume(blobs, 48, PIXEL_A)
    calls = []
    settings = Match2DSettings(angular_step_deg=20.0, diameter_a=150.0, border_fraction=0.5, tile_size_px=160)
    result = match_template_2d(
        image,
        PIXEL_A,
        template,
        PIXEL_A,
        CTFParameters(1.5, 0.1, 20.0),
        settings,
        progress=lambda done, total: calls.append((done, total)),
    )
    return result, calls


def test_planted_particles_found_with_orientation_within_the_step(planted):
    result, _ = planted
    top = result.matches.top(3)
    truth = torch.tensor(COORDS_XY, dtype=torch.float64)
    matched = set()
    for xy, euler in zip(top.coords_px, top.euler_deg, strict=True):
        dist = (truth - xy).norm(dim=1)
        j = int(dist.argmin())
        matched.add(j)
        # position: within 1.5 px (a coarse orientation shifts the correlation peak by < 1 px here)
        assert dist[j] < 1.5
        # orientation: geodesic error at most the 20° sampling step (RELION ZYZ ground truth)
        error = angular_distance_deg(euler_zyz_to_matrix(*euler), euler_zyz_to_matrix(*EULER_DEG[j]))
        assert error <= 20.0
    assert matched == {0, 1, 2}
    # the three particles are the three best peaks (side lobes of a particle come next, measured at
    # ≤ 0.85 × the weakest particle)
    assert result.matches.scores[3] < top.scores.min()


def test_tiles_partition_the_micrograph_and_progress_is_reported(planted):
    result, calls = planted
    assert calls[-1][0] == calls[-1][1] == len(calls)
    layout = tile_layout(256, 160, 40)
    assert layout[0][1] == 0 and layout[-1][2] == 256
    assert all(a[2] == b[1] for a, b in zip(layout, layout[1:], strict=False))
    assert result.scores.shape == (256, 256)
    # every pixel inside the border got a score from some tile
    assert torch.isfinite(result.scores).all()


def test_threshold_can_change_without_recomputation(planted):
    matches = planted[0].matches
    assert len(matches) > 3  # all peaks above the floor are stored, not only the particles
    assert (matches.scores > matches.floor).all()
    strict = matches.above(float(matches.scores[2]) - 1e-3)
    assert len(strict) == 3
    again = TemplateMatches.from_dict(json.loads(json.dumps(matches.to_dict())))
    torch.testing.assert_close(again.coords_px, matches.coords_px)
    torch.testing.assert_close(again.euler_deg, matches.euler_deg)
    assert again.floor == matches.floor


def test_bad_micrograph_is_rejected():
    with pytest.raises(ValueError, match="expected a 2-D micrograph"):
        match_template_2d(torch.zeros(2, 8, 8), 1.0, torch.zeros(8, 8, 8), 1.0, None)
    with pytest.raises(ValueError, match="finer than the micrograph"):
        match_template_2d(
            torch.zeros(64, 64),
            2.0,
            torch.zeros(8, 8, 8),
            1.0,
            None,
            Match2DSettings(matching_pixel_size_a=1.0),
        )
