#!/usr/bin/env bash
# Mutation testing (mutmut) over the modules whose logic decides what a user is told: the
# report's analysis and verdicts, the matrix, the store's resume decisions, compare/baseline,
# merge and shard assignment ([tool.mutmut] in pyproject.toml lists them and the tests used).
# Prints the score per module and every surviving mutant; exits 1 when a module scores under
# MUTATION_MIN percent (default 90). `mutmut show <name>` shows a mutant's diff.
#
#   bash scripts/mutation.sh            # reuse mutants/ results for unchanged code
#   bash scripts/mutation.sh --fresh    # start over
#   bash scripts/mutation.sh 'harness.run.shard*'   # only these mutants (glob on names)
set -euo pipefail
cd "$(dirname "$0")/.."
export HARNESS_MNIST_DIR="${HARNESS_MNIST_DIR:-$(pwd)/../shared/data/mnist}"
export HARNESS_HYPOTHESIS_SCALE="${HARNESS_HYPOTHESIS_SCALE:-0.1}"  # fewer generated matrices per mutant
[[ -x .venv/bin/mutmut ]] || bash scripts/setup.sh
if [[ "${1:-}" == "--fresh" ]]; then
  rm -rf mutants
  shift
fi
log=mutants.log
start=$(date +%s)
echo "mutation: mutmut over $(nproc) cores; progress in $log"
# mutmut's progress line redraws itself; the log keeps it, the terminal gets the result.
if ! .venv/bin/mutmut run --max-children "${MUTATION_CHILDREN:-$(nproc)}" "$@" >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "mutation: mutmut run failed (see $log)" >&2
  exit 2
fi
echo "mutation: ran in $(( $(date +%s) - start )) s"
.venv/bin/mutmut results --all true | .venv/bin/python scripts/mutation_score.py --min "${MUTATION_MIN:-90}"
