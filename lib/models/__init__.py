"""Models: one file per architecture, and the factory (factory.py) that builds any of them by name."""
