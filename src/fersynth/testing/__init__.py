"""Helpers for tests and benchmarks only (random full-size pipelines); no stage imports them."""
