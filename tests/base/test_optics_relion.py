"""Our 2D CTF equals RELION 3.1's (``relion_ctf_toolbox --simulate``, Debian package ``relion``),
an independent implementation, for astigmatic and phase-shifted cases."""

import shutil
import subprocess

import mrcfile
import numpy as np
import pytest

from cryowarp.base.optics import ctf_2d

pytestmark = pytest.mark.skipif(shutil.which("relion_ctf_toolbox") is None,
                                reason="RELION not installed (apt-get install relion)")

CASES = [  # (pixel Å, box, kV, Cs mm, A, U Å, V Å, angle °, phase °)
    (1.3, 128, 300.0, 2.7, 0.07, 21000.0, 18500.0, 35.0, 0.0),
    (1.0, 96, 300.0, 2.7, 0.10, 8000.0, 6000.0, 120.0, 90.0),
    (0.85, 64, 200.0, 1.4, 0.07, 15000.0, 14900.0, -20.0, 30.0),
    (2.0, 100, 300.0, 0.01, 0.15, 30000.0, 22000.0, 170.0, 0.0),
]


@pytest.mark.parametrize("case", CASES)
def test_ctf_2d_equals_relion(case, tmp_path):
    px, box, kv, cs, ac, u, v, ang, ps = case
    out = tmp_path / "ctf.mrc"
    subprocess.run(["relion_ctf_toolbox", "--simulate", str(out), "--angpix", str(px), "--box", str(box),
                    "--kV", str(kv), "--Q0", str(ac), "--Cs", str(cs), "--defU", str(u), "--defV", str(v),
                    "--defAng", str(ang), "--phase_shift", str(ps)], check=True, capture_output=True)
    relion = np.fft.ifftshift(mrcfile.read(out))  # RELION writes the full, centred spectrum
    ours = ctf_2d((u + v) / 2e4, (u - v) / 1e4, ang, voltage_kv=kv, cs_mm=cs, amplitude_contrast=ac,
                  pixel_size_a=px, shape_yx=(box, box), phase_shift_deg=ps, rfft=False).numpy()
    # float32: the phase reaches ~160 rad in the corners at 0.85 Å, so ~1e-5 rad rounding there plus
    # RELION's own float arithmetic; 3e-4 is float precision at that phase, far below any real error
    # (a 1 Å defocus error alone moves the phase by 0.02 rad at Nyquist).
    np.testing.assert_allclose(ours, relion, atol=3e-4, rtol=0)
