"""Benchmarks of fleetflow."""
