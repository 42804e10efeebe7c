"""Benchmarks: ours against straightforward baselines, run side by side (never in the tests)."""
