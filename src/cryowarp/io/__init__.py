"""cryowarp.io."""
