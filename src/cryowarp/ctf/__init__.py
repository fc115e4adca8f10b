"""cryowarp.ctf."""
