"""Containerized reproducibility matrix harness for PyTorch."""

__version__ = "0.2.0"

#: The distribution (pip) name: `harness` on PyPI is an unrelated project, so `pip install
#: harness` would install something else. The import package and the command stay `harness`.
DISTRIBUTION = "torch-repro-matrix"
