"""The ``harness`` command line: thin verbs over library functions (see cli/main.py)."""

from harness.cli.main import app, main

__all__ = ["app", "main"]
