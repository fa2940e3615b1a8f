"""Generators of synthetic data (demo patches, KOMPSAT-5 scenes, the benchmark scene). Kept apart from the
datasets, which only read and check data and never import this package."""
