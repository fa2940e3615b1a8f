"""Data: the band-agnostic patch dataset and the KOMPSAT-5 scenes, label conventions (labels.py), bands and
their normalization, augmentation, raster reading, and the factory that builds a run's datasets and
loaders. Reads and checks data; never imports the generators of lib/synthetic/."""
