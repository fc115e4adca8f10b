"""cryowarp.deconv."""
