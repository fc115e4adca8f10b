"""cryowarp.picking."""
