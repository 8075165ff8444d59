"""A run directory read back from disk: its status, the verification of its invariants, its
tasks, records and side reports as one, and the merged reports of an array."""
