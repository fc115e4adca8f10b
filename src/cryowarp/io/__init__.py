"""cryowarp.io: files <-> tensors and dataclasses (movies, gain, MRC, STAR, EER, tilt metadata).

The only layer (with pipeline) that touches files; every conversion to other programs' units
(RELION's Å defocus, pixel shifts, FEI's SI units) happens here.
"""

from cryowarp.io.errors import (
    CorruptFileError,
    CryowarpIOError,
    InvalidDataError,
    ShapeMismatchError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from cryowarp.io.gain import GainReference, GainTransform, detect_gain_orientation, load_gain
from cryowarp.io.movies import Movie, MovieInfo, movie_info, read_movie
from cryowarp.io.mrc import read_mrc, read_mrc_header, write_mrc
from cryowarp.io.star import micrographs_star_tables, particles_star_tables, read_star, write_star

__all__ = [
    "CorruptFileError",
    "CryowarpIOError",
    "InvalidDataError",
    "ShapeMismatchError",
    "TruncatedFileError",
    "UnsupportedFormatError",
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
