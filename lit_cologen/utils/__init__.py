"""Helpers shared by every layer of the library (no imports from the rest of lit_cologen)."""
