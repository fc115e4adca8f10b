"""Synthetic cryo-EM data with exact ground truth (movies, micrographs, sessions, tilt series).

Conventions (shared with docs/api-contracts.md and docs/conventions.md)
----------------------------------------------------------------------
* Arrays ``[..., H, W]``, movies ``[F, H, W]``; pixel ``(row y, column x)`` has coordinate ``(y, x)``
  (pixel centres on integers, no half-pixel offset); user-facing coordinates ``coords_px_xy`` are (x, y).
* **Motion.** ``frame_f(x) = specimen(x − d_f(x))`` with d in Å, yx, evaluated at the *frame* position
  x; ``truth.displacement_a_yx(coords_px_yx, frame_index)`` returns it exactly. The global part has mean
  0 over frames; the local part has mean 0 over frames at every point and mean 0 over the image in every
  frame, so the clean image is the specimen at its mean position. RELION's ``rlnMicrographShiftX/Y``
  (written in ``*_motion.star``) is −d/pixel size. The global part is applied with a Fourier phase ramp
  (exact); the local part by bicubic resampling of the globally shifted frame.
* **Image formation.** Weak-phase object: intensity I = T·(1 − 2·φ⊛CTF), φ the projected phase
  (σₑ·V_z, rad), CTF from :func:`cryowarp.base.optics.ctf_1d` (RELION convention, CTF(0) = +A, defocus
  positive = underfocus), so particles appear *dark* in the clean image. T = exp(−t/3500 Å) is the
  transmission of thick contamination/carbon (1 elsewhere). A specimen B-factor envelope
  exp(−B k²/4) (``bfactor_a2``) multiplies the CTF.
* **Defocus.** At frame pixel (x, y): D + gₓ(x − cₓ) + g_y(y − c_y) for the specimen mid-plane
  (c = image centre ((w−1)/2, (h−1)/2), gradient from ``specimen_tilt_deg`` and ``tilt_axis_deg``:
  the axis runs at that angle from +x towards +y; with the axis along +y a positive tilt makes the +x
  side more underfocused, as in Warp); a particle adds its height z (Å, +z towards the source) as
  +z·10⁻⁴ µm. The space-variant defocus is exact: ice at the plane's defocus under each pixel
  (Jacobi–Anger expansion, ``sim._ctf``), each particle in its own PSF-padded box at its own defocus.
* **Specimen.** Particles are atomic models (built-in ``5a1a``: β-galactosidase; any PDB/mmCIF via
  gemmi) or generated proteins (``kind:kDa``, kinds in ``PROTEIN_KINDS``), projected from atoms with the
  5-Gaussian electron scattering factors of International Tables C 4.3.2.2 (gemmi ``c4322``), implicit
  hydrogens and the displaced water subtracted (contrast relative to ice). Orientations are RELION ZYZ
  Euler angles (:func:`cryowarp.base.geometry.euler_zyz_to_matrix`): an atom at r appears at A·r and
  the projection runs along z. Ice is a Gaussian random phase field with the power spectrum of
  0.0311 molecules/Å³ of water correlated by a liquid-like structure factor (ice ring at 3.7 Å) plus a
  smooth thickness variation.
* **Dose.** Frame f receives ``exposure_per_frame_e_per_a2``; its signal is attenuated by
  exp(−N_f/(2 N_e(k))) with N_f the exposure at the middle of the frame and N_e the Grant–Grigorieff
  critical exposure (:func:`cryowarp.base.optics.critical_exposure_e_per_a2`). Expected counts per
  pixel = exposure × pixel area × I / gain; counts are Poisson. The gain reference (mean 1) is what one
  multiplies raw frames by (RELION/Warp convention).
"""

from cryowarp.sim._atoms import PROTEIN_KINDS, AtomCloud, builtin_model, generate_protein, read_atomic_model
from cryowarp.sim._motion import MotionField
from cryowarp.sim._potential import interaction_constant_rad_per_v_a, project_atoms
from cryowarp.sim.micrograph import MicrographSimSettings, SimulatedMicrograph, simulate_micrograph
from cryowarp.sim.movie import (
    MovieSimSettings,
    MovieTruth,
    ParticleTruth,
    SimulatedMovie,
    SpecimenSimSettings,
    simulate_movie,
)
from cryowarp.sim.session import read_session, simulate_session

__all__ = [
    "PROTEIN_KINDS",
    "AtomCloud",
    "MicrographSimSettings",
    "MotionField",
    "MovieSimSettings",
    "MovieTruth",
    "ParticleTruth",
    "SimulatedMicrograph",
    "SimulatedMovie",
    "SpecimenSimSettings",
    "builtin_model",
    "generate_protein",
    "interaction_constant_rad_per_v_a",
    "project_atoms",
    "read_atomic_model",
    "read_session",
    "simulate_micrograph",
    "simulate_movie",
    "simulate_session",
]
