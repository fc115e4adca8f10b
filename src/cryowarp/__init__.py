"""cryowarp: on-the-fly cryo-EM preprocessing, a Python re-implementation of Warp (Tegunov & Cramer, 2019)."""

__version__ = "0.1.0"
