"""cryowarp.web."""
