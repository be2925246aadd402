"""Benchmarks of hydrodeploy itself; each module prints its numbers (see README, Benchmarks)."""
