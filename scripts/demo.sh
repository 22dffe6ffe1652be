#!/usr/bin/env bash
# The main job on a machine without a GPU: set up .venv, then run the post's experiment
# (three seed placements, 2 repeats each) on real MNIST with the local executor, and report.
# Extra arguments go to `harness run` (e.g. --progress plain).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HARNESS_MNIST_DIR="${HARNESS_MNIST_DIR:-$(pwd)/../shared/data/mnist}"
out=results/placement-quick
status=0
.venv/bin/harness run examples/placement-quick.yaml --out "$out" "$@" || status=$?
echo
echo "report: $out/report.md   (JSON: $out/report.json, plots: $out/plots/)"
echo "curves: .venv/bin/tensorboard --logdir $out/cells"
exit "$status"
