"""The reliability suite: Orca under load, under faults, and under hostile input."""
