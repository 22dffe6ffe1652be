#!/usr/bin/env bash
# Creates .venv with the host side, the workload side ([workload]) and the dev tools ([dev]).
# Idempotent: a second call only re-installs the package itself.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[workload,dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import harness, torch, pytorch_lightning; print('venv ready: torch', torch.__version__)"
