"""cryowarp.export."""
