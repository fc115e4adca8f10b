"""match2d uses the *local* defocus of each tile (CTF grid), in the library and in `cryowarp match2d --ctf`."""

from __future__ import annotations

import json

import torch
from tests.templates._synthetic import blob_cluster, blob_volume, planted_micrograph
from typer.testing import CliRunner

from cryowarp.cli.main import app
from cryowarp.cli.match import local_defocus_from_ctf_json
from cryowarp.io.mrc import write_mrc
from cryowarp.templates import (
    CTFParameters,
    Match2DSettings,
    TemplateMatches,
    match_template_2d,
    orientation_grid,
)

PIXEL_A = 4.0
SHAPE = (384, 768)
# defocus ramps linearly along x from 0.5 µm (x = 0) to 4.5 µm (x = w − 1): a strongly tilted specimen
DEFOCUS_LEFT, DEFOCUS_RIGHT = 0.5, 4.5
# three CTF tiles of 384 px (centres x = 192, 384, 576: defocus 1.5, 2.5, 3.5 µm); one particle each
COORDS_XY = [(190.0, 180.0), (380.0, 200.0), (580.0, 190.0)]
# orientations on the 30° search grid (entries 40, 300, 500): this test is about the CTF, not angles
EULER_DEG = orientation_grid(30.0)[[40, 300, 500]].tolist()
TILE_CENTRES_X = [192.0, 384.0, 576.0]


def ramp_um(x: torch.Tensor | float) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    return DEFOCUS_LEFT + (DEFOCUS_RIGHT - DEFOCUS_LEFT) * x / (SHAPE[1] - 1)


def tilted_micrograph(blobs) -> torch.Tensor:
    """Each particle imaged at the defocus under it, then white noise (s.d. = 0.7 × signal)."""
    clean = torch.zeros(SHAPE, dtype=torch.float64)
    for c, e in zip(COORDS_XY, EULER_DEG, strict=True):
        clean += planted_micrograph(
            blobs, SHAPE, [c], [e], PIXEL_A, defocus_um=float(ramp_um(c[0])), noise_to_signal=0.0
        ).double()
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return (clean + noise * clean.std() * 0.7).float()


def particle_scores(matches: TemplateMatches) -> list[float]:
    """Score of the peak nearest each planted particle (within 3 px, else 0)."""
    out = []
    for c in COORDS_XY:
        d = (matches.coords_px - torch.tensor(c, dtype=torch.float64)).norm(dim=1)
        out.append(float(matches.scores[d.argmin()]) if float(d.min()) < 3.0 else 0.0)
    return out


def test_tiles_use_the_local_defocus():
    blobs = blob_cluster()
    image = tilted_micrograph(blobs)
    template = blob_volume(blobs, 48, PIXEL_A)
    mean = CTFParameters((DEFOCUS_LEFT + DEFOCUS_RIGHT) / 2, 0.1, 20.0)
    # the same 384-px tiles in both runs, so that only the CTF differs
    settings = Match2DSettings(
        angular_step_deg=30.0,
        diameter_a=150.0,
        border_fraction=0.5,
        refine_orientations=False,
        tile_size_px=384,
    )
    glob = match_template_2d(image, PIXEL_A, template, PIXEL_A, mean, settings)
    loc = match_template_2d(image, PIXEL_A, template, PIXEL_A, mean, settings, local_defocus_um=lambda c: ramp_um(c[:, 0]))
    assert glob.matches.meta["tile_defocus_um"] == [mean.defocus_um] * 3
    torch.testing.assert_close(
        torch.tensor(loc.matches.meta["tile_defocus_um"], dtype=torch.float64),
        ramp_um(torch.tensor(TILE_CENTRES_X)),
    )
    # every particle is found with the local CTF; where the global defocus is 1 µm wrong (outer tiles)
    # the right CTF raises the score (measured 19.9 vs 15.2, and 16.0 vs not found within 3 px);
    # in the middle tile, where both use 2.5 µm, the scores agree
    s_glob, s_loc = particle_scores(glob.matches), particle_scores(loc.matches)
    assert all(s > 0 for s in s_loc)
    assert s_loc[0] > 1.2 * s_glob[0] and s_loc[2] > 1.2 * s_glob[2]
    assert abs(s_loc[1] - s_glob[1]) < 0.05 * s_glob[1]


def test_ctf_json_grid_gives_local_defocus(tmp_path):
    path = tmp_path / "ctf.json"
    path.write_text(
        json.dumps({"defocus_um": 2.5, "defocus_grid_um": [[[DEFOCUS_LEFT, DEFOCUS_RIGHT]]], "image_shape_yx": list(SHAPE)})
    )
    f = local_defocus_from_ctf_json(path, SHAPE)
    xy = torch.tensor([[0.0, 0.0], [SHAPE[1] - 1.0, 100.0], [320.0, 50.0]])
    torch.testing.assert_close(f(xy).double(), ramp_um(xy[:, 0]), atol=1e-4, rtol=0)
    # a micrograph binned by 2 maps onto the same grid
    g = local_defocus_from_ctf_json(path, (SHAPE[0] // 2, SHAPE[1] // 2))
    assert abs(float(g(torch.tensor([[SHAPE[1] // 2 - 1.0, 0.0]]))[0]) - DEFOCUS_RIGHT) < 1e-4
    (tmp_path / "plain.json").write_text(json.dumps({"defocus_um": 1.8}))
    assert local_defocus_from_ctf_json(tmp_path / "plain.json", SHAPE) is None


def test_match2d_cli_uses_the_ctf_grid(tmp_path):
    blobs = blob_cluster()
    write_mrc(tmp_path / "mic.mrc", tilted_micrograph(blobs), PIXEL_A)
    write_mrc(tmp_path / "ref.mrc", blob_volume(blobs, 48, PIXEL_A), PIXEL_A)
    model = {
        "defocus_um": 2.5,
        "defocus_delta_um": 0.1,
        "astigmatism_angle_deg": 20.0,
        "defocus_grid_um": [[[DEFOCUS_LEFT, DEFOCUS_RIGHT]]],
        "image_shape_yx": list(SHAPE),
    }
    (tmp_path / "ctf.json").write_text(json.dumps(model))
    common = [
        "match2d",
        str(tmp_path / "mic.mrc"),
        "--template",
        str(tmp_path / "ref.mrc"),
        "--angular-step",
        "30",
        "--diameter",
        "150",
        "--device",
        "cpu",
    ]
    res = CliRunner().invoke(app, common + ["--ctf", str(tmp_path / "ctf.json"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    peaks = TemplateMatches.from_dict(json.loads((tmp_path / "out" / "mic_peaks.json").read_text()))
    # three 384-px tiles, each filtered with the grid's defocus at its centre, not the global 2.5 µm
    assert peaks.meta["tile_px"] == 384
    torch.testing.assert_close(
        torch.tensor(peaks.meta["tile_defocus_um"], dtype=torch.float64),
        ramp_um(torch.tensor(TILE_CENTRES_X)),
        atol=1e-4,
        rtol=0,
    )
    assert all(s > 0 for s in particle_scores(peaks))
