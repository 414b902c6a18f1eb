"""visual-words: visual concept tokens across models (a reproducible artifact for arXiv 2406.07506)."""

__version__ = "0.1.0"
