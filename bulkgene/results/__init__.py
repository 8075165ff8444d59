"""A run directory read back from disk: its status and the verification of its invariants."""
