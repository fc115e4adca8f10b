"""cryowarp.motion."""
