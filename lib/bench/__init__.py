"""benchmark.py's library: measure.py takes the numbers (one fresh process per model), report.py writes them
as the markdown pages docs/benchmark.md and docs/speed.md."""
