"""tinyfm: train small models, make them fast, shrink them, and prove each step with measurements."""

__version__ = "0.1.0"
