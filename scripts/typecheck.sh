#!/usr/bin/env bash
# The type check: mypy over harness/, as configured in pyproject.toml ([tool.mypy]): strict on
# harness/contract/ and harness/matrix/, the rest checked without strict mode.
# Usage: bash scripts/typecheck.sh [mypy options or paths]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m mypy "$@"
