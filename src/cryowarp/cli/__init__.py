"""cryowarp.cli."""
