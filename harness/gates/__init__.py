"""Gates a CI job fails on: comparing two results folders, and a committed baseline."""
