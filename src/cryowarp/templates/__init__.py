"""cryowarp.templates."""
