"""Containerized reproducibility matrix harness for PyTorch."""

__version__ = "0.2.0"
