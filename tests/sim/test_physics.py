"""Validation of the simulator's physics: potentials, projection convention, CTF, defocus plane, picks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryowarp.base.fourier import radial_average_2d
from cryowarp.base.geometry import euler_zyz_to_matrix
from cryowarp.base.optics import electron_wavelength_a
from cryowarp.sim import (
    PROTEIN_KINDS,
    AtomCloud,
    MicrographSimSettings,
    MovieSimSettings,
    builtin_model,
    generate_protein,
    interaction_constant_rad_per_v_a,
    project_atoms,
    read_atomic_model,
    simulate_micrograph,
    simulate_movie,
)


def _cloud(coords, elements):
    return AtomCloud(torch.tensor(coords, dtype=torch.float32), tuple(elements), "test", 0.0)


def test_interaction_constant_at_300_kv():
    # Kirkland: σ = 2π m e λ / h² = 0.000653 rad/(V·Å) at 300 kV (6.526e-4 with CODATA constants)
    assert interaction_constant_rad_per_v_a(300.0) == pytest.approx(6.526e-4, rel=1e-3)


def test_one_carbon_atom_integrates_to_its_scattering_factor():
    import gemmi

    f0 = sum(gemmi.Element("C").c4322.get_coefs()[:5]) + sum(gemmi.Element("H").c4322.get_coefs()[:5])
    phase = project_atoms(
        _cloud([[0.0, 0.0, 0.0]], ["C"]), torch.eye(3), pixel_size_a=0.8, box_px=64, solvent=False
    )
    # ∫φ d²r = σ · 47.878 V·Å² · f(0) (one C with its implicit H), exactly the k = 0 Fourier coefficient
    assert float(phase.sum()) * 0.8**2 == pytest.approx(
        interaction_constant_rad_per_v_a(300) * 47.878 * f0, rel=1e-4
    )
    # the atom sits on pixel (32, 32) and is round
    assert divmod(int(phase.argmax()), 64) == (32, 32)
    torch.testing.assert_close(phase, phase.T, atol=1e-6, rtol=0)


def test_projection_follows_relion_euler_convention():
    # atoms at x = +20 Å and z = +30 Å. RELION: a point r appears at A·r, projected along z.
    cloud = _cloud([[20.0, 0.0, 0.0], [0.0, 0.0, 30.0]], ["O", "S"])

    def peaks(euler):
        a = euler_zyz_to_matrix(*euler)
        img = project_atoms(cloud, a, pixel_size_a=1.0, box_px=96, solvent=False)
        flat = img.flatten().argsort(descending=True)
        found = []
        for i in flat.tolist():
            y, x = divmod(i, 96)
            if all(abs(y - fy) + abs(x - fx) > 4 for fy, fx, _ in found):
                found.append((y, x, float(img[y, x])))
            if len(found) == 2:
                return found

    # identity: O at (x=68, y=48), S projected onto the centre (48, 48); S is the stronger scatterer
    (y1, x1, _), (y2, x2, _) = peaks((0.0, 0.0, 0.0))
    assert {(y1, x1), (y2, x2)} == {(48, 68), (48, 48)}
    # tilt 90°: A = [[0,0,−1],[0,1,0],[1,0,0]] → O (20,0,0) goes to z (centre), S (0,0,30) to x = −30
    found = peaks((0.0, 90.0, 0.0))
    assert {(y, x) for y, x, _ in found} == {(48, 48), (48, 18)}
    # psi 90° after tilt 0: A = R_z(−90°)... RELION's in-plane rotation moves +x to −y
    found = peaks((0.0, 0.0, 90.0))
    assert {(y, x) for y, x, _ in found} == {(28, 48), (48, 48)}


def test_builtin_model_matches_the_pdb_file(shared_data):
    from_file = read_atomic_model(shared_data / "pdb" / "5a1a.cif")
    builtin = builtin_model("5a1a")
    assert from_file.n_atoms == builtin.n_atoms == 33696
    torch.testing.assert_close(from_file.coords_a_xyz, builtin.coords_a_xyz, atol=1e-3, rtol=0)
    # β-galactosidase tetramer: ~465 kDa, about 180 Å across
    assert 80.0 < builtin.radius_a < 100.0


@pytest.mark.parametrize("kind", PROTEIN_KINDS)
def test_generated_proteins_have_their_mass(kind):
    cloud = generate_protein(kind, 500.0, seed=1)
    # 13.9 Da per heavy atom with its hydrogens
    assert cloud.n_atoms == round(500e3 / 13.9)
    # volume at 0.81 Da/Å³ → a sphere of that volume has R = 52.7 Å; no shape is smaller than it
    assert cloud.radius_a >= 0.95 * (3 * 500e3 / 0.81 / (4 * math.pi)) ** (1 / 3)
    assert set(cloud.elements) <= {"C", "N", "O", "S"}
    with pytest.raises(ValueError, match="protein mass 1.0 kDa out of range"):
        generate_protein(kind, 1.0)


def test_twelve_protein_kinds_look_different():
    # BoxNet needs variety: the inertia-tensor eigenvalue ratios of the kinds must spread out
    ratios = []
    for kind in PROTEIN_KINDS:
        c = generate_protein(kind, 300.0).coords_a_xyz.double()
        ev = torch.linalg.eigvalsh(c.T @ c / len(c))
        ratios.append((float(ev[0] / ev[2]), float(ev[1] / ev[2])))
    assert len(PROTEIN_KINDS) >= 10
    distinct = {(round(a, 1), round(b, 1)) for a, b in ratios}
    assert len(distinct) >= 6


def _ctf_zero_radii_per_a(defocus_um, n, voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.07):
    """Frequencies (1/Å) of the first ``n`` CTF zeros: χ(k) = nπ − α, α = atan(A/√(1−A²))."""
    lam = electron_wavelength_a(voltage_kv)
    alpha = math.atan2(amplitude_contrast, math.sqrt(1 - amplitude_contrast**2))
    cs = cs_mm * 1e7
    out = []
    for i in range(1, n + 1):
        # solve π λ D k² − π/2 Cs λ³ k⁴ = iπ − α for k² (smaller root)
        a, b, c = 0.5 * math.pi * cs * lam**3, -math.pi * lam * defocus_um * 1e4, i * math.pi - alpha
        k2 = (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
        out.append(math.sqrt(k2))
    return out


def _zero_contrast(profile, pixel_size_a, n_px, defocus_um, k_min, k_max):
    """Mean of PS at the CTF zeros divided by the mean PS half-way between zeros, within [k_min, k_max]."""
    zeros = [k for k in _ctf_zero_radii_per_a(defocus_um, 40) if k_min < k < k_max]
    mids = [(a + b) / 2 for a, b in zip(zeros[:-1], zeros[1:], strict=False)]

    def at(ks):
        return np.mean([np.interp(k * pixel_size_a * n_px, np.arange(len(profile)), profile) for k in ks])

    return at(zeros) / at(mids)


def test_thon_ring_zeros_sit_at_the_true_defocus():
    s = MicrographSimSettings(
        shape_yx=(1024, 1024),
        pixel_size_a=1.2,
        defocus_um=1.8,
        defocus_delta_um=0.0,
        particle_models=(),
        protein_kinds=("globule",),
        protein_masses_kda=(200.0,),
    )
    mic = simulate_micrograph(s, seed=0)
    image = mic.image - mic.image.mean()
    ps = torch.fft.rfft2(image).abs() ** 2
    profile = radial_average_2d(ps).numpy()
    trial_um = np.arange(1.5, 2.1001, 0.01)
    ratios = [_zero_contrast(profile, 1.2, 1024, d, 1 / 25, 1 / 4) for d in trial_um]
    # the closed-form zeros fall darkest at the true defocus: the scan's minimum is within 0.02 µm of it
    assert abs(trial_um[int(np.argmin(ratios))] - 1.8) <= 0.02, trial_um[int(np.argmin(ratios))]
    # and they are really dark there (power at the zeros < 75 % of the power between zeros, noise included)
    assert min(ratios) < 0.75, min(ratios)


def test_tilted_plane_defocus_gradient():
    s = MicrographSimSettings(
        shape_yx=(512, 512),
        pixel_size_a=1.0,
        defocus_um=2.0,
        specimen_tilt_deg=20.0,
        tilt_axis_deg=90.0,
        particle_models=(),
        protein_kinds=("globule",),
        protein_masses_kda=(150.0,),
        particle_area_fraction=0.3,
    )
    mic = simulate_micrograph(s, seed=1)
    t = mic.truth
    gx, gy = t.defocus_gradient_um_per_px_xy
    # axis along +y, positive tilt: +x side higher → more underfocused (Warp), tan(20°)·1 Å per px
    assert gx == pytest.approx(math.tan(math.radians(20.0)) * 1e-4, rel=1e-9) and gy == pytest.approx(
        0.0, abs=1e-15
    )
    assert float(t.local_defocus_um(torch.tensor([[255.5, 255.5]]))[0]) == pytest.approx(2.0)
    p = t.particles
    assert len(p.defocus_um) >= 5
    torch.testing.assert_close(p.defocus_um, t.local_defocus_um(p.coords_px_xy) + p.height_a * 1e-4)
    # heights keep particles inside the 300 Å slab
    assert (
        float((p.height_a.abs() + p.radius_a).max()) <= 150.0 + 1e-6 or float(p.height_a.abs().max()) == 0.0
    )


def test_coordinates_land_on_particles():
    s = MicrographSimSettings(
        shape_yx=(768, 768),
        particle_models=("5a1a",),
        particle_area_fraction=0.3,
        n_contamination_blobs=1,
        carbon_edge=True,
    )
    mic = simulate_micrograph(s, seed=2)
    coords = mic.coords_px_xy.round().long()
    assert len(coords) >= 4
    # disc averages of radius 50 Å (β-galactosidase is ~90 Å in radius)
    disc = _disc_means
    phase_at = disc(mic.phase_image_rad, coords, 50)
    clean_at = disc(mic.clean_image, coords, 50)
    # reference discs well away from every particle and artifact
    rng = np.random.default_rng(0)
    ref = []
    while len(ref) < 40:
        x, y = rng.integers(50, 718, size=2)
        if bool(mic.artifact_mask[max(0, y - 50) : y + 50, max(0, x - 50) : x + 50].any()):
            continue
        if (
            float(
                torch.linalg.vector_norm(
                    mic.coords_px_xy - torch.tensor([x, y], dtype=torch.float64), dim=1
                ).min()
            )
            > 150
        ):
            ref.append((x, y))
    ref = torch.tensor(ref)
    phase_ref = disc(mic.phase_image_rad, ref, 50)
    clean_ref = disc(mic.clean_image, ref, 50)
    # every true centre holds more projected potential than any particle-free disc ...
    assert float(phase_at.min()) > float(phase_ref.max())
    # ... and particles are dark in the clean (CTF-modulated) image on average
    assert float(clean_at.mean()) < float(clean_ref.mean()) - 0.01
    # no particle sits on contamination or carbon
    assert not bool(mic.artifact_mask[coords[:, 1], coords[:, 0]].any())
    assert 0.02 < float(mic.artifact_mask.float().mean()) < 0.9
    # and the projected phase peaks near the centres (within the particle radius)
    for x, y in coords[:5].tolist():
        window = mic.phase_image_rad[max(0, y - 90) : y + 91, max(0, x - 90) : x + 91]
        assert float(window.mean()) > float(mic.phase_image_rad.mean())


def _disc_means(image, coords_xy, radius_px):
    """Mean of ``image`` in discs around integer (x, y) centres."""
    h, w = image.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = []
    for x, y in coords_xy.tolist():
        out.append(float(image[(yy - y) ** 2 + (xx - x) ** 2 <= radius_px**2].mean()))
    return torch.tensor(out)


def test_particles_do_not_overlap():
    s = MicrographSimSettings(
        shape_yx=(1024, 1024),
        particle_models=(),
        protein_kinds=("ring", "rod", "globule"),
        protein_masses_kda=(100.0, 400.0),
        particle_area_fraction=0.4,
    )
    mic = simulate_micrograph(s, seed=3)
    p = mic.truth.particles
    d = torch.cdist(p.coords_px_xy, p.coords_px_xy) + torch.eye(len(p.coords_px_xy)) * 1e9
    assert bool((d >= (p.radius_a[:, None] + p.radius_a[None, :]) - 1e-9).all())
    assert len(set(p.species.tolist())) == 3


def _frc(a, b, n_rings):
    fa, fb = torch.fft.rfft2(a - a.mean()), torch.fft.rfft2(b - b.mean())
    num = radial_average_2d((fa * fb.conj()).real, n_bins=n_rings)
    den = torch.sqrt(
        radial_average_2d(fa.abs() ** 2, n_bins=n_rings) * radial_average_2d(fb.abs() ** 2, n_bins=n_rings)
    )
    return num / den


def test_aligning_with_the_true_motion_sharpens_the_sum():
    s = MovieSimSettings(
        shape_yx=(384, 384),
        n_frames=12,
        exposure_per_frame_e_per_a2=3.0,
        initial_motion_a=8.0,
        drift_a_per_frame=0.5,
        local_amplitude_a=3.0,
        particle_models=(),
        protein_kinds=("globule", "ring"),
        protein_masses_kda=(300.0,),
    )
    movie = simulate_movie(s, seed=6)
    h, w = s.shape_yx
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    coords = torch.stack([yy, xx], -1).reshape(-1, 2)
    aligned = torch.zeros(h, w)
    for f in range(s.n_frames):
        d = (movie.truth.displacement_a_yx(coords, f) / s.pixel_size_a).reshape(h, w, 2).float()
        # frame_f(x) = S(x − d(x)) ⇒ S(y) ≈ frame_f(y + d(y)) (d is smooth)
        grid = torch.stack(
            [(xx.float() + d[..., 1] + 0.5) * 2 / w - 1, (yy.float() + d[..., 0] + 0.5) * 2 / h - 1], -1
        )
        aligned += torch.nn.functional.grid_sample(
            movie.frames[f][None, None],
            grid[None],
            mode="bicubic",
            padding_mode="border",
            align_corners=False,
        )[0, 0]
    plain = movie.frames.sum(0)
    inner = (slice(24, -24), slice(24, -24))
    frc_aligned = _frc(aligned[inner], movie.clean_image[inner], 168)
    frc_plain = _frc(plain[inner], movie.clean_image[inner], 168)
    band = slice(168 // 10, 168 // 3)  # 1/13 Å⁻¹ … 1/4 Å⁻¹
    # the plain sum is blurred by ~10 Å of motion: aligned is better in ≥ 90 % of rings and 1.4× on average
    assert float((frc_aligned[band] > frc_plain[band]).float().mean()) >= 0.9
    assert float(frc_aligned[band].mean()) > 1.4 * float(frc_plain[band].mean())


def _sector_profile(image, angle_deg, half_width_deg=12.0):
    """Radial power profile (bins of 1/N) of ``image`` within ±half_width of the direction ``angle_deg``."""
    n = image.shape[-1]
    ps = torch.fft.rfft2(image - image.mean()).abs() ** 2
    ky = torch.fft.fftfreq(n)[:, None].expand(n, n // 2 + 1)
    kx = torch.fft.rfftfreq(n)[None, :].expand(n, n // 2 + 1)
    azimuth = torch.rad2deg(torch.atan2(ky, kx))
    diff = (azimuth - angle_deg + 90.0) % 180.0 - 90.0  # the spectrum is symmetric under k → −k
    sector = diff.abs() <= half_width_deg
    radius = torch.round(torch.sqrt(kx**2 + ky**2) * n).long()
    sums = torch.zeros(n).index_add_(0, radius[sector].clamp_max(n - 1), ps[sector])
    counts = torch.zeros(n).index_add_(0, radius[sector].clamp_max(n - 1), torch.ones(int(sector.sum())))
    return (sums / counts.clamp_min(1)).numpy()[: n // 2]


def _best_defocus(profile, pixel_size_a, n_px, trial_um):
    ratios = [_zero_contrast(profile, pixel_size_a, n_px, d, 1 / 20, 1 / 5) for d in trial_um]
    return float(trial_um[int(np.argmin(ratios))])


def test_astigmatism_puts_defocus_u_along_its_angle():
    # U = 2.0 µm at 30° from +x towards +y, V = 1.4 µm at 120°
    s = MicrographSimSettings(
        shape_yx=(1024, 1024),
        pixel_size_a=1.2,
        defocus_um=1.7,
        defocus_delta_um=0.6,
        astigmatism_angle_deg=30.0,
        total_exposure_e_per_a2=60.0,
        particle_models=(),
        protein_kinds=("globule",),
        protein_masses_kda=(200.0,),
    )
    image = simulate_micrograph(s, seed=4).image
    trial = np.arange(1.2, 2.2001, 0.02)
    along_u = _best_defocus(_sector_profile(image, 30.0), 1.2, 1024, trial)
    along_v = _best_defocus(_sector_profile(image, 120.0), 1.2, 1024, trial)
    # sectors ±12° wide average defoci within 0.6·(1 − cos 24°)/2 ≈ 0.03 µm of the extremes
    assert along_u == pytest.approx(2.0, abs=0.05), along_u
    assert along_v == pytest.approx(1.4, abs=0.05), along_v


def test_tilted_specimen_changes_defocus_across_the_image():
    # 50° about the y axis: the +x side is more underfocused, by tan 50° · 3 Å = 3.6e-4 µm per pixel
    s = MicrographSimSettings(
        shape_yx=(1024, 1024),
        pixel_size_a=3.0,
        defocus_um=2.0,
        defocus_delta_um=0.0,
        specimen_tilt_deg=50.0,
        tilt_axis_deg=90.0,
        total_exposure_e_per_a2=80.0,
        particle_models=(),
        protein_kinds=("globule",),
        protein_masses_kda=(200.0,),
    )
    mic = simulate_micrograph(s, seed=5)
    gx = mic.truth.defocus_gradient_um_per_px_xy[0]
    assert gx == pytest.approx(math.tan(math.radians(50.0)) * 3e-4)
    trial = np.arange(1.6, 2.4001, 0.01)
    for x0 in (0, 256, 512, 768):
        tile = mic.image[384:640, x0 : x0 + 256]
        profile = radial_average_2d(torch.fft.rfft2(tile - tile.mean()).abs() ** 2).numpy()
        ratios = [_zero_contrast(profile, 3.0, 256, d, 1 / 40, 1 / 8) for d in trial]
        found = float(trial[int(np.argmin(ratios))])
        expected = float(mic.truth.local_defocus_um(torch.tensor([[x0 + 127.5, 511.5]]))[0])
        # each 256² tile's Thon rings sit at its own defocus (tiles 0.09 µm apart; ±0.035 µm is the
        # ring-minimum scan's accuracy on one noisy 256² tile, 0.01 µm steps)
        assert found == pytest.approx(expected, abs=0.035), (x0, found, expected)
