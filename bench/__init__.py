"""Benchmarks of opsflow against the DESIGN targets; each runs its baseline in the same run."""
