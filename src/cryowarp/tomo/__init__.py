"""cryowarp.tomo."""
