"""RELION ZYZ Euler convention: exact matrices, round trips, uniform random rotations."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cryowarp.base.geometry import (
    angular_distance_deg,
    euler_zyz_to_matrix,
    matrix_to_euler_zyz,
    random_rotations,
    rotation_about_axis,
)


def test_tilt_only_is_active_rotation_by_minus_tilt_about_y():
    # warp-facts §6.1: with rot = psi = 0 the matrix is an active rotation by −θ about Y.
    m = euler_zyz_to_matrix(0.0, 30.0, 0.0)
    expected = rotation_about_axis((0, 1, 0), -30.0)
    torch.testing.assert_close(m, expected)


def test_rot_only_is_active_rotation_by_minus_rot_about_z():
    m = euler_zyz_to_matrix(40.0, 0.0, 0.0)
    torch.testing.assert_close(m, rotation_about_axis((0, 0, 1), -40.0))


def test_relion_matrix_entries_for_a_general_case():
    # Independent evaluation of RELION's closed form for (rot, tilt, psi) = (10°, 20°, 30°).
    a, b, g = (math.radians(v) for v in (10.0, 20.0, 30.0))
    ca, sa, cb, sb, cg, sg = math.cos(a), math.sin(a), math.cos(b), math.sin(b), math.cos(g), math.sin(g)
    expected = torch.tensor([
        [cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
        [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
        [sb * ca, sb * sa, cb],
    ], dtype=torch.float64)
    torch.testing.assert_close(euler_zyz_to_matrix(10.0, 20.0, 30.0), expected)


@settings(max_examples=200, deadline=None)
@given(st.floats(-180, 180), st.floats(0.5, 179.5), st.floats(-180, 180))
def test_euler_round_trip(rot, tilt, psi):
    m = euler_zyz_to_matrix(rot, tilt, psi)
    back = matrix_to_euler_zyz(m)
    torch.testing.assert_close(euler_zyz_to_matrix(*back.unbind(-1)), m, atol=1e-9, rtol=0)


def test_gimbal_lock_round_trip():
    for rot, tilt, psi in [(30.0, 0.0, 20.0), (30.0, 180.0, 20.0)]:
        m = euler_zyz_to_matrix(rot, tilt, psi)
        torch.testing.assert_close(euler_zyz_to_matrix(*matrix_to_euler_zyz(m).unbind(-1)), m, atol=1e-9, rtol=0)


def test_random_rotations_are_orthonormal_and_uniform():
    g = torch.Generator().manual_seed(0)
    r = random_rotations(20000, generator=g)
    eye = torch.eye(3, dtype=torch.float64).expand(20000, 3, 3)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(20000, dtype=torch.float64))
    # For Haar-uniform rotations the rotated z axis is uniform on the sphere: its z component is U(−1, 1),
    # mean 0 and variance 1/3; with 20000 samples the s.e. of the mean is 0.004.
    z = r[:, 2, 2]
    assert abs(z.mean().item()) < 0.02
    assert abs(z.var().item() - 1 / 3) < 0.02


def test_angular_distance():
    a = euler_zyz_to_matrix(0.0, 0.0, 0.0)
    b = euler_zyz_to_matrix(0.0, 25.0, 0.0)
    assert abs(angular_distance_deg(a, b).item() - 25.0) < 1e-9
