"""Baselines the benchmarks compare against (built here for measurement, not for training)."""
