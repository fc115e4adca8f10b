"""cryowarp.pipeline."""
