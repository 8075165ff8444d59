"""A run directory read back: its tasks, records, side reports and merged accounting."""
