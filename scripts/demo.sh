#!/usr/bin/env bash
# The main job on a machine without a GPU: set up .venv, then run the post's experiment
# (three seed placements, 2 repeats each) on real MNIST with the local executor, and report.
# Extra arguments go to `harness run` (e.g. --progress plain).
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS_SETUP_EXTRAS=workload bash scripts/setup.sh  # no linters or pytest: a demo needs none
export HARNESS_MNIST_DIR="${HARNESS_MNIST_DIR:-$(pwd)/../shared/data/mnist}"
out=results/placement-quick
status=0
.venv/bin/harness run examples/placement-quick.yaml --out "$out" "$@" || status=$?
# harness run has printed the report's path; what else is there:
echo "also: $out/report.json, $out/plots/; curves: .venv/bin/tensorboard --logdir $out/cells"
exit "$status"
