"""The benchmark's sections, grouped by what they measure; `benchmarks/bench.py` runs them and writes the results.

`common` holds what they share: the settings, timing side by side, peak-memory measurement, child processes, and
the inputs (real-size random backbones, synthetic utterances and cached features).
"""
