"""cryowarp.sim."""
