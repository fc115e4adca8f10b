"""cryowarp.io: files <-> tensors and dataclasses (movies, gain, MRC, STAR, EER, tilt metadata).

The only layer (with pipeline) that touches files; every conversion to other programs' units
(RELION's Å defocus, pixel shifts, FEI's SI units) happens here.
"""

from cryowarp.io.eer import write_eer
from cryowarp.io.errors import (
    CorruptFileError,
    CryowarpIOError,
    InvalidDataError,
    ShapeMismatchError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from cryowarp.io.gain import GainReference, GainTransform, detect_gain_orientation, load_gain
from cryowarp.io.mdoc import mdoc_tilt_series, read_mdoc, read_tlt
from cryowarp.io.movies import Movie, MovieInfo, movie_info, read_movie
from cryowarp.io.mrc import read_mrc, read_mrc_header, write_mrc
from cryowarp.io.star import (
    ctf_to_star_row,
    micrographs_star_tables,
    motion_to_star_tables,
    particles_star_tables,
    read_particles,
    read_star,
    write_star,
)

__all__ = [
    "CorruptFileError",
    "CryowarpIOError",
    "InvalidDataError",
    "ShapeMismatchError",
    "TruncatedFileError",
    "UnsupportedFormatError",
    "write_eer",
    "mdoc_tilt_series",
    "read_mdoc",
    "read_tlt",
    "ctf_to_star_row",
    "motion_to_star_tables",
    "read_particles",
    "GainReference",
    "GainTransform",
    "detect_gain_orientation",
    "load_gain",
    "Movie",
    "MovieInfo",
    "movie_info",
    "read_movie",
    "read_mrc",
    "read_mrc_header",
    "write_mrc",
    "micrographs_star_tables",
    "particles_star_tables",
    "read_star",
    "write_star",
]
