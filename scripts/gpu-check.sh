#!/usr/bin/env bash
# The checks that only a GPU shows, as one script for a GPU machine (no Docker, no network):
# harness run + report on examples/gpu-check.yaml, the host-sync count, the capture benchmark.
#
#   bash scripts/gpu-check.sh OUTDIR [CHECK ... | all]   # checks: scripts/gpu_check.py
#   bash scripts/gpu-check.sh OUTDIR packing             # runs per GPU: gpu_packing_check.py
#
# Before a device call, here: MNIST's .gz files in .gpu-data/mnist and the wheels the GPU
# machine lacks (pydantic and its parts) in .whl, both ignored by git (docs/testing.md,
# "On a GPU machine"); name both in the call's carry. HARNESS_GPU_PYTHON picks the interpreter
# (default python3: the machine's own torch). Writes OUTDIR/summary.md, OUTDIR/results/ (the
# report), OUTDIR/gpu-check.json and .md. HARNESS_GPU_CHECK_ACCELERATOR=cpu: the CPU dry mode.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-check}}"
shift || true
python="${HARNESS_GPU_PYTHON:-python3}"
# the wheels only where the interpreter lacks what they carry
if ! "$python" -c "import pydantic" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/harness-site .whl/*.whl
  export PYTHONPATH="/tmp/harness-site"
fi
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export HARNESS_MNIST_DIR="${HARNESS_MNIST_DIR:-$(pwd)/.gpu-data/mnist}"
export PYTHONUNBUFFERED=1
mkdir -p "$out"

# ---- Runs per GPU (issue 32), only when named: `bash scripts/gpu-check.sh OUT packing`
# 1, 2, 4 and 8 side-by-side runs of one MLP cell on GPU 0 (about 3 minutes on one H100,
# estimated): each run's step time, one run's peak memory (nvidia-smi), their trajectories
# against the run alone's. Writes OUT/gpu-packing.json, the measurement that
# `harness run --runs-per-gpu auto --packing OUT/gpu-packing.json` reads, and OUT/gpu-packing.md
# (scripts/gpu_packing_check.py). Other checks named beside it run first.
others=()
packing=0
for name in "$@"; do
  if [[ "$name" == packing ]]; then packing=1; else others+=("$name"); fi
done
if ((packing)); then
  status=0
  if ((${#others[@]})); then
    "$python" scripts/gpu_check.py "$out" "${others[@]}" || status=$?
  fi
  "$python" scripts/gpu_packing_check.py "$out" || status=$?
  exit "$status"
fi
# ---- the other checks (scripts/gpu_check.py)

exec "$python" scripts/gpu_check.py "$out" "$@"
