"""extract_particles_2d: plant particles with known motion, dose, CTF; recover them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from tests.conftest import DEVICES

from cryowarp.base.optics import ctf_2d
from cryowarp.export import ExportSettings, ParticleStack, extract_particles_2d, normalize_outside_radius
from cryowarp.motion.model import MotionModel

RAW = ExportSettings(box_size_px=32, invert=False, normalize=False, dose_weighted=False)


def gaussian(shape_yx, centre_yx, sigma_px, device="cpu"):
    y = torch.arange(shape_yx[0], dtype=torch.float32, device=device)[:, None]
    x = torch.arange(shape_yx[1], dtype=torch.float32, device=device)[None, :]
    return torch.exp(-((y - centre_yx[0]) ** 2 + (x - centre_yx[1]) ** 2) / (2 * sigma_px**2))


@dataclass
class GlobalTrack:
    """Duck-typed motion model: the same displacement everywhere, d_f in Å (yx)."""

    displacement_per_frame_a_yx: torch.Tensor

    def displacement_a_yx(self, coords_px_yx, frame_index):
        return self.displacement_per_frame_a_yx[torch.as_tensor(frame_index).long()]


@dataclass
class PlaneCTF:
    """Duck-typed CTF model: mean defocus = 1.5 µm + 1e-4 µm/px · x, ΔD = 0.2 µm at 30°."""

    astigmatism_angle_deg: float = 30.0
    phase_shift_deg: float = 0.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    defocus_delta_um: float = 0.2

    def local_defocus_uv_um(self, coords_px_xy):
        mean = 1.5 + 1e-4 * coords_px_xy[:, 0]
        return mean + 0.1, mean - 0.1


@pytest.mark.parametrize("device", DEVICES)
def test_static_particle_is_cut_exactly(device):
    frames = gaussian((128, 160), (40.0, 100.0), 2.0, device).expand(3, 128, 160).clone()
    stack = extract_particles_2d(
        frames,
        None,
        None,
        torch.tensor([[100.0, 40.0]]),
        pixel_size_a=1.0,
        exposure_per_frame_e_per_a2=1.0,
        settings=RAW,
    )
    # an integer position, no motion, equal weights: the box is the frame crop centred at box//2
    expected = gaussian((32, 32), (16.0, 16.0), 2.0, device)
    torch.testing.assert_close(stack.images[0], expected, atol=1e-5, rtol=0)
    assert stack.images.device.type == torch.device(device).type
    assert stack.pixel_size_a == 1.0 and stack.box_size_px == 32 and stack.defocus_u_um is None


def test_moving_particle_is_followed_with_subpixel_shifts():
    pixel_size_a = 1.3
    n_frames = 8
    centre_yx = torch.tensor([60.3, 70.8])  # in the motion-corrected micrograph
    d_px = torch.stack([torch.linspace(-3.2, 3.2, n_frames), torch.linspace(2.1, -2.1, n_frames)], dim=-1)
    # frame_f(x) = specimen(x − d_f): the particle sits at centre + d_f in frame f
    frames = torch.stack([gaussian((128, 128), centre_yx + d_px[f], 2.0) for f in range(n_frames)])
    model = GlobalTrack(d_px * pixel_size_a)
    coords_xy = centre_yx.flip(-1)[None]
    followed = extract_particles_2d(
        frames,
        model,
        None,
        coords_xy,
        pixel_size_a=pixel_size_a,
        exposure_per_frame_e_per_a2=1.0,
        settings=RAW,
    ).images[0]
    # integer origin + Fourier sub-pixel shift put the particle exactly on the box centre (16, 16) in
    # every frame; 2e-3 bounds the periodic-wrap and sampling error of Fourier-shifting a σ = 2 px Gaussian
    expected = gaussian((32, 32), (16.0, 16.0), 2.0)
    torch.testing.assert_close(followed, expected, atol=2e-3, rtol=0)
    smeared = extract_particles_2d(
        frames,
        None,
        None,
        coords_xy,
        pixel_size_a=pixel_size_a,
        exposure_per_frame_e_per_a2=1.0,
        settings=RAW,
    ).images[0]
    assert smeared.max() < 0.6 * followed.max()  # 0.56: the track spans 6.4 × 4.2 px


def test_real_motion_model_without_motion_equals_none():
    frames = torch.randn(4, 96, 96, generator=torch.Generator().manual_seed(0))
    coords = torch.tensor([[30.0, 40.0], [50.5, 60.25]])
    zero = MotionModel.zeros((96, 96), 1.0, 4)
    a = extract_particles_2d(
        frames,
        zero,
        None,
        coords,
        pixel_size_a=1.0,
        exposure_per_frame_e_per_a2=2.0,
        settings=ExportSettings(box_size_px=32, particle_diameter_a=20.0),
    )
    b = extract_particles_2d(
        frames,
        None,
        None,
        coords,
        pixel_size_a=1.0,
        exposure_per_frame_e_per_a2=2.0,
        settings=ExportSettings(box_size_px=32, particle_diameter_a=20.0),
    )
    torch.testing.assert_close(a.images, b.images)


def test_dose_weights_are_normalised_per_frequency():
    # identical frames: with Σ_f W_f(k) = 1 at every k, the weighted sum is that frame, exactly
    frame = torch.randn(96, 96, generator=torch.Generator().manual_seed(1))
    frames = frame.expand(10, 96, 96).clone()
    weighted = extract_particles_2d(
        frames,
        None,
        None,
        torch.tensor([[48.0, 48.0]]),
        pixel_size_a=1.0,
        exposure_per_frame_e_per_a2=3.0,
        settings=RAW.model_copy(update={"dose_weighted": True}),
    )
    torch.testing.assert_close(weighted.images[0], frame[32:64, 32:64], atol=1e-5, rtol=0)


def test_dose_weighting_favours_early_frames_at_high_frequency():
    # frame 0 holds a fine checkerboard (Nyquist), later frames are empty: dose weighting keeps far
    # more of it than a plain average, because early frames carry the high frequencies (B_f ∝ f + ½)
    frames = torch.zeros(10, 64, 64)
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 2.0 - 1.0
    frames[0] = checker
    kw = dict(pixel_size_a=1.0, exposure_per_frame_e_per_a2=1.0)
    plain = extract_particles_2d(frames, None, None, torch.tensor([[32.0, 32.0]]), settings=RAW, **kw)
    dw = extract_particles_2d(
        frames,
        None,
        None,
        torch.tensor([[32.0, 32.0]]),
        settings=RAW.model_copy(update={"dose_weighted": True}),
        **kw,
    )
    # at k = 0.5/Å (corner 0.707/Å): W_0 = exp(−4·0.5·k²/4)/Σ_f exp(−4(f+½)k²/4); checked by hand below
    k2 = 0.5  # |k|² of the checkerboard at 1 Å/px, 1/Å²
    w = torch.exp(-4.0 * (torch.arange(10) + 0.5) * k2 / 4.0)
    expected_gain = float(w[0] / w.sum()) / 0.1
    ratio = float(dw.images[0].abs().mean() / plain.images[0].abs().mean())
    assert ratio == pytest.approx(expected_gain, rel=1e-3)


def test_normalisation_outside_diameter():
    g = torch.Generator().manual_seed(2)
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    images = 0.3 * x - 0.2 * y + 5.0 + torch.randn(3, 64, 64, generator=g) * 2.0
    images[:, 22:42, 22:42] += 50.0  # the particle, inside D/2 = 20 px
    out = normalize_outside_radius(images, 20.0)
    outside = ((y - 32) ** 2 + (x - 32) ** 2) > 400
    ring = out[:, outside]
    torch.testing.assert_close(ring.mean(-1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(ring.std(-1, unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    # the plane is gone: no correlation with x left outside
    xs = x[outside] - x[outside].mean()
    assert float((ring * xs).mean(-1).abs().max()) < 1e-3
    with pytest.raises(ValueError, match="leaves 0 pixels outside it in a 64-px box"):
        normalize_outside_radius(images, 100.0)


def test_invert_and_local_defocus_columns():
    frames = gaussian((128, 128), (64.0, 64.0), 2.0).expand(2, 128, 128).clone()
    coords = torch.tensor([[64.0, 64.0], [20.0, 100.0]])
    stack = extract_particles_2d(
        frames,
        None,
        PlaneCTF(),
        coords,
        pixel_size_a=1.0,
        exposure_per_frame_e_per_a2=1.0,
        settings=RAW.model_copy(update={"invert": True}),
    )
    assert float(stack.images[0, 16, 16]) == pytest.approx(-1.0, abs=1e-5)
    torch.testing.assert_close(stack.defocus_u_um, torch.tensor([1.6064, 1.6020]), atol=1e-5, rtol=0)
    torch.testing.assert_close(stack.defocus_v_um, torch.tensor([1.4064, 1.4020]), atol=1e-5, rtol=0)
    assert stack.astigmatism_angle_deg == 30.0
    back = ParticleStack.from_dict(stack.to_dict(include_images=True))
    torch.testing.assert_close(back.images, stack.images)
    torch.testing.assert_close(back.defocus_u_um, stack.defocus_u_um)


def test_phase_flip_makes_the_spectrum_positive():
    # a point scatterer imaged with the CTF: after flipping with sign(CTF) its spectrum is |CTF| ≥ 0
    # 4 Å/px keeps the CTF's point-spread (≈ λ·Δz·k_max = 37 Å) well inside the 64-px box
    size, pixel_size_a = 256, 4.0
    ctf = ctf_2d(1.5, 0.0, 0.0, pixel_size_a=pixel_size_a, shape_yx=(size, size))
    delta = torch.zeros(size, size)
    delta[128, 128] = 1.0
    image = torch.fft.irfft2(torch.fft.rfft2(delta) * ctf, s=(size, size))
    frames = image.expand(2, size, size).clone()

    @dataclass
    class FlatCTF(PlaneCTF):
        defocus_delta_um: float = 0.0

        def local_defocus_uv_um(self, coords_px_xy):
            return torch.full((len(coords_px_xy),), 1.5), torch.full((len(coords_px_xy),), 1.5)

    kw = dict(pixel_size_a=pixel_size_a, exposure_per_frame_e_per_a2=1.0)
    settings = ExportSettings(
        box_size_px=64, invert=False, normalize=False, dose_weighted=False, flip_phases=True
    )
    flipped = extract_particles_2d(
        frames, None, FlatCTF(), torch.tensor([[128.0, 128.0]]), settings=settings, **kw
    )
    plain = extract_particles_2d(
        frames,
        None,
        FlatCTF(),
        torch.tensor([[128.0, 128.0]]),
        settings=RAW.model_copy(update={"box_size_px": 64}),
        **kw,
    )
    centred = lambda im: torch.fft.rfft2(torch.fft.ifftshift(im)).real  # noqa: E731
    ctf64 = ctf_2d(1.5, 0.0, 0.0, pixel_size_a=pixel_size_a, shape_yx=(64, 64))
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])  # noqa: E731
    # cropping the 2× box to 64 px smooths the spectrum, so the match is strong, not exact
    assert corr(centred(flipped.images[0]), ctf64.abs()) > 0.9
    assert corr(centred(plain.images[0]), ctf64) > 0.9
    assert flipped.phase_flipped


def test_output_pixel_size_rescales():
    frames = gaussian((256, 256), (128.0, 128.0), 4.0).expand(2, 256, 256).clone()
    settings = RAW.model_copy(update={"box_size_px": 32, "output_pixel_size_a": 2.0})
    stack = extract_particles_2d(
        frames,
        None,
        None,
        torch.tensor([[128.0, 128.0]]),
        pixel_size_a=1.0,
        exposure_per_frame_e_per_a2=1.0,
        settings=settings,
    )
    assert stack.images.shape == (1, 32, 32) and stack.pixel_size_a == 2.0
    # σ = 4 px at 1 Å/px is σ = 2 px at 2 Å/px: second moment of the rescaled blob
    im = stack.images[0].clamp_min(0)
    y = torch.arange(32.0)[:, None] - 16
    sigma = math.sqrt(float((im * y**2).sum() / im.sum()))
    assert sigma == pytest.approx(2.0, abs=0.05)


def test_bad_arguments_are_named():
    frames = torch.zeros(3, 64, 64)
    coords = torch.tensor([[32.0, 32.0]])
    kw = dict(pixel_size_a=1.0, exposure_per_frame_e_per_a2=1.0)
    with pytest.raises(ValueError, match="leaves none of 3"):
        extract_particles_2d(
            frames, None, None, coords, settings=ExportSettings(skip_first_frames=2, skip_last_frames=1), **kw
        )
    with pytest.raises(ValueError, match="flip_phases needs a CTF model"):
        extract_particles_2d(frames, None, None, coords, settings=ExportSettings(flip_phases=True), **kw)
    with pytest.raises(ValueError, match=r"frames must be \(f, h, w\)"):
        extract_particles_2d(frames[0], None, None, coords, **kw)
    with pytest.raises(ValueError, match="box_size_px must be even"):
        ExportSettings(box_size_px=31)
