"""A small, exact-truth micrograph generator for CTF tests (independent of cryowarp.sim).

White noise is filtered by the CTF (base.optics.ctf_2d, checked against RELION in tests/base) with a
B-factor envelope, and white noise is added on top, so the amplitude spectrum is
|CTF| × envelope × signal + a flat background. A tilted specimen is made by blending images filtered
at defocus levels 0.005 µm apart with linear weights in the local defocus D(x, y) (the blend error
is far below the tolerances the tests state).
"""

from __future__ import annotations

import math

import torch

from cryowarp.base.optics import ctf_2d


def synth_micrograph(
    shape_yx: tuple[int, int] = (1024, 1024),
    *,
    pixel_size_a: float = 2.0,
    defocus_um: float = 2.0,
    defocus_delta_um: float = 0.0,
    astigmatism_angle_deg: float = 0.0,
    phase_shift_deg: float = 0.0,
    tilt_deg: float = 0.0,
    tilt_axis_deg: float = 90.0,
    bfactor_a2: float = -40.0,
    noise: float = 1.0,
    n_frames: int = 1,
    seed: int = 0,
    extra_defocus_um: torch.Tensor | None = None,
    level_step_um: float = 0.005,
) -> torch.Tensor:
    """Image `(h, w)` (or frames `(f, h, w)` whose sum is it) with a known, possibly tilted, CTF.

    The defocus at pixel (x, y) is ``defocus_um + tan(tilt) · s / 10⁴`` where s (Å) is the signed
    distance of the pixel from the image centre perpendicular to the tilt axis, measured along the
    direction ``tilt_axis_deg − 90°`` (from +x towards +y): underfocus grows towards that direction.
    ``extra_defocus_um`` `(h, w)`, µm, is added to it (a non-planar specimen). ``level_step_um`` is
    the spacing of the blended defocus levels.
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = shape_yx
    white = torch.randn(shape_yx, generator=gen)
    spectrum = torch.fft.rfft2(white)
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32) - h / 2,
        torch.arange(w, dtype=torch.float32) - w / 2,
        indexing="ij",
    )
    direction = math.radians(tilt_axis_deg - 90.0)
    distance_a = (xx * math.cos(direction) + yy * math.sin(direction)) * pixel_size_a
    local_um = defocus_um + math.tan(math.radians(tilt_deg)) * distance_a / 1e4
    if extra_defocus_um is not None:
        local_um = local_um + extra_defocus_um
    step = level_step_um
    lo, hi = float(local_um.min()), float(local_um.max())
    levels = torch.arange(math.floor(lo / step) * step, hi + 2 * step, step)
    image = torch.zeros(shape_yx)
    for level in levels.tolist():
        weight = (1 - (local_um - level).abs() / step).clamp_min(0)
        if float(weight.max()) == 0:
            continue
        ctf = ctf_2d(
            level,
            defocus_delta_um,
            astigmatism_angle_deg,
            pixel_size_a=pixel_size_a,
            shape_yx=shape_yx,
            phase_shift_deg=phase_shift_deg,
            bfactor_a2=bfactor_a2,
        )
        image += weight * torch.fft.irfft2(spectrum * ctf, s=shape_yx)
    image = image + noise * torch.randn(shape_yx, generator=gen)
    if n_frames == 1:
        return image
    # frames: the image split into equal parts plus independent noise that cancels in the sum
    extra = torch.randn((n_frames,) + tuple(shape_yx), generator=gen) * noise
    extra = extra - extra.mean(0, keepdim=True)
    return image[None] / n_frames + extra
