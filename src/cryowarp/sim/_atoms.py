"""Atom clouds for the simulator: atomic models read with gemmi, and coarse generated "proteins"."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: Elements the scattering-factor table knows by symbol (others fall back to gemmi's table).
PROTEIN_ELEMENTS = ("C", "N", "O", "S")

#: Kinds of generated proteins (see :func:`generate_protein`). Each is a union of ellipsoids.
PROTEIN_KINDS = (
    "globule",
    "prolate",
    "oblate",
    "rod",
    "dumbbell",
    "ring",
    "tetrahedron",
    "l_shape",
    "y_shape",
    "shell",
    "octahedron",
    "filament",
)

# Average protein: 0.81 Da/Å³ (partial specific volume 0.73 cm³/g) and ~13.9 Da per non-H atom incl. its Hs
_DALTON_PER_A3 = 0.81
_DALTON_PER_HEAVY_ATOM = 13.9
# composition of non-H atoms in an average protein (by count)
_COMPOSITION = {"C": 0.63, "N": 0.17, "O": 0.19, "S": 0.01}


@dataclass(frozen=True)
class AtomCloud:
    """Atoms of one particle species.

    Attributes
    ----------
    coords_a_xyz : torch.Tensor
        `(N, 3)` float32 positions in Å, (x, y, z), centred on the centre of mass.
    elements : tuple of str
        `(N,)` element symbols.
    name : str
        Source (file stem or generated kind with its mass).
    radius_a : float
        Radius of the smallest centred sphere holding all atoms, Å.
    """

    coords_a_xyz: torch.Tensor
    elements: tuple[str, ...]
    name: str
    radius_a: float

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return int(self.coords_a_xyz.shape[0])

    def element_groups(self) -> dict[str, torch.Tensor]:
        """Indices of atoms per element symbol."""
        arr = np.asarray(self.elements)
        return {e: torch.from_numpy(np.nonzero(arr == e)[0]) for e in sorted(set(self.elements))}


def _centred(coords: np.ndarray, elements: list[str], name: str) -> AtomCloud:
    coords = np.asarray(coords, dtype=np.float64)
    coords = coords - coords.mean(0)
    radius = float(np.sqrt((coords**2).sum(1)).max()) if len(coords) else 0.0
    return AtomCloud(torch.as_tensor(coords, dtype=torch.float32), tuple(elements), name, radius)


def read_atomic_model(path: str | Path) -> AtomCloud:
    """Read all non-hydrogen atoms of the first model of a PDB/mmCIF file with gemmi.

    Hydrogens are dropped because the projected-potential kernel adds implicit ones (see
    :mod:`cryowarp.sim._potential`). Raises ``ValueError`` naming the file when it holds no atoms.
    """
    import gemmi

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: atomic model not found (expected a .pdb/.cif file)")
    structure = gemmi.read_structure(str(path))
    structure.remove_hydrogens()
    coords, elements = [], []
    for chain in structure[0]:
        for residue in chain:
            for atom in residue:
                coords.append((atom.pos.x, atom.pos.y, atom.pos.z))
                elements.append(atom.element.name)
    if not coords:
        raise ValueError(f"{path}: expected atoms in the first model, found none")
    return _centred(np.array(coords), elements, path.stem)


def builtin_model(name: str = "5a1a") -> AtomCloud:
    """An atomic model shipped with cryowarp (``5a1a``: E. coli β-galactosidase, 465 kDa, PDB CC0).

    The file ``sim/data/5a1a_atoms.npz`` holds the non-H atoms of PDB entry 5A1A (x, y, z in Å and the
    element symbol), extracted with gemmi from ``../shared/data/pdb/5a1a.cif``.
    """
    path = Path(__file__).parent / "data" / f"{name}_atoms.npz"
    if not path.is_file():
        raise ValueError(f"unknown built-in model {name!r}: expected {path.name} in {path.parent}")
    with np.load(path) as data:
        coords = data["coords_a_xyz"].astype(np.float64)
        elements = [str(e) for e in data["elements"]]
    return _centred(coords, elements, name)


def resolve_model(spec: str) -> AtomCloud:
    """Turn a specimen spec into atoms: ``"5a1a"`` (built-in), a path to a model, or ``"kind:mass_kda"``."""
    if ":" in spec and not Path(spec).exists():
        kind, mass = spec.split(":", 1)
        return generate_protein(kind, float(mass), seed=0)
    if Path(spec).suffix.lower() in (".cif", ".pdb", ".mmcif", ".ent", ".gz"):
        return read_atomic_model(spec)
    return builtin_model(spec)


def _kind_ellipsoids(kind: str, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(centre, semi-axes) of the ellipsoids of a unit-sized shape of ``kind``."""
    e = []
    if kind == "globule":
        e.append((np.zeros(3), np.array([1.0, 0.9, 0.85])))
        for _ in range(4):  # lumps on the surface
            d = rng.normal(size=3)
            e.append((0.7 * d / np.linalg.norm(d), np.full(3, 0.45)))
    elif kind == "prolate":
        e.append((np.zeros(3), np.array([0.6, 0.6, 1.5])))
    elif kind == "oblate":
        e.append((np.zeros(3), np.array([1.3, 1.3, 0.5])))
    elif kind == "rod":
        e.append((np.zeros(3), np.array([0.35, 0.35, 2.6])))
    elif kind == "dumbbell":
        e += [
            (np.array([0, 0, -1.0]), np.full(3, 0.75)),
            (np.array([0, 0, 1.0]), np.full(3, 0.75)),
            (np.zeros(3), np.array([0.3, 0.3, 0.8])),
        ]
    elif kind == "ring":
        for i in range(10):
            a = 2 * math.pi * i / 10
            e.append((np.array([1.2 * math.cos(a), 1.2 * math.sin(a), 0.0]), np.array([0.38, 0.38, 0.45])))
    elif kind == "tetrahedron":
        for v in ([1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]):
            e.append((0.6 * np.array(v, float), np.full(3, 0.6)))
    elif kind == "l_shape":
        e += [
            (np.array([0, 0, 0.8]), np.array([0.4, 0.4, 1.1])),
            (np.array([0.8, 0, -0.1]), np.array([1.1, 0.4, 0.4])),
        ]
    elif kind == "y_shape":
        for i in range(3):
            a = 2 * math.pi * i / 3
            e.append(
                (
                    np.array([0.8 * math.cos(a), 0.8 * math.sin(a), 0]),
                    np.array([0.35 + 0.6 * abs(math.cos(a)), 0.35 + 0.6 * abs(math.sin(a)), 0.35]),
                )
            )
    elif kind == "shell":
        for _ in range(24):
            d = rng.normal(size=3)
            e.append((1.2 * d / np.linalg.norm(d), np.full(3, 0.35)))
    elif kind == "octahedron":
        for v in np.concatenate([np.eye(3), -np.eye(3)]):
            e.append((0.9 * v, np.full(3, 0.5)))
    elif kind == "filament":
        for i in range(9):
            a = 2 * math.pi * i / 4.5
            e.append((np.array([0.35 * math.cos(a), 0.35 * math.sin(a), -2.0 + 0.5 * i]), np.full(3, 0.4)))
    else:
        raise ValueError(f"unknown protein kind {kind!r}: expected one of {', '.join(PROTEIN_KINDS)}")
    return e


def generate_protein(kind: str, mass_kda: float, *, seed: int = 0) -> AtomCloud:
    """A coarse "protein" of ``mass_kda`` (50–5000 kDa): random atoms filling a union of ellipsoids.

    The shape is scaled so that its volume matches the mass at 0.81 Da/Å³; atoms (C/N/O/S in average
    protein proportions, 13.9 Da per non-H atom) are placed uniformly inside it, so the low-resolution
    potential is that of a protein of this mass and shape while high-resolution detail is random.
    """
    if not 10.0 <= mass_kda <= 10000.0:
        raise ValueError(f"protein mass {mass_kda} kDa out of range: expected 10–10000 kDa (50–5000 typical)")
    rng = np.random.default_rng(seed)
    ellipsoids = _kind_ellipsoids(kind, rng)
    lo = np.min([c - a for c, a in ellipsoids], axis=0)
    hi = np.max([c + a for c, a in ellipsoids], axis=0)

    def inside(p: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(p), bool)
        for c, a in ellipsoids:
            mask |= (((p - c) / a) ** 2).sum(1) <= 1.0
        return mask

    # volume of the unit shape by Monte Carlo, then scale to the target volume
    probe = rng.uniform(lo, hi, size=(200_000, 3))
    unit_volume = float(inside(probe).mean() * np.prod(hi - lo))
    volume_a3 = mass_kda * 1000.0 / _DALTON_PER_A3
    scale = (volume_a3 / unit_volume) ** (1.0 / 3.0)
    n_atoms = int(round(mass_kda * 1000.0 / _DALTON_PER_HEAVY_ATOM))
    points = []
    n_found = 0
    while n_found < n_atoms:
        p = rng.uniform(lo, hi, size=(max(2 * n_atoms, 10_000), 3))
        p = p[inside(p)]
        points.append(p)
        n_found += len(p)
    coords = np.concatenate(points)[:n_atoms] * scale
    symbols = np.array(list(_COMPOSITION))
    elements = rng.choice(symbols, size=n_atoms, p=np.array(list(_COMPOSITION.values())))
    return _centred(coords, [str(s) for s in elements], f"{kind}:{mass_kda:g}kDa")
