"""All unit-conversion constants, in one place (style.md §2)."""

ANGSTROM_PER_UM = 1.0e4
ANGSTROM_PER_MM = 1.0e7
ANGSTROM_PER_NM = 10.0
VOLT_PER_KV = 1.0e3
