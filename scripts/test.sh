#!/usr/bin/env bash
# The test command: the whole suite (unit, real-MNIST training, real Docker engine).
set -euo pipefail
cd "$(dirname "$0")/.."
export HARNESS_MNIST_DIR="${HARNESS_MNIST_DIR:-$(pwd)/../shared/data/mnist}"
exec .venv/bin/python -m pytest -q -ra --durations=15 "$@"
