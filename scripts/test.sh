#!/usr/bin/env bash
# The test command: the whole suite (unit, real-MNIST training, real Docker engine).
#
#   bash scripts/test.sh                        # everything; needs a Docker engine
#   bash scripts/test.sh -m "not docker"        # no engine needed (also: HARNESS_TEST_NO_ENGINE=1)
#   bash scripts/test.sh -m "not slurm"         # no Slurm cluster needed
#   bash scripts/test.sh tests/test_cli.py -k resume
#
# It finds the engine, the Slurm cluster and the wheelhouse .ci/run set up
# (scripts/docker-engine.sh, scripts/slurm-cluster.sh and /tmp/harness-wheelhouse) when
# DOCKER_HOST, SLURM_CONF and HARNESS_WHEELHOUSE are unset, and stops before pytest, saying how
# to start one, when no engine answers: tests that need one fail, never skip (docs/testing.md,
# "Skips"). The Slurm tests fail the same way, each saying how to start the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
export HARNESS_MNIST_DIR="${HARNESS_MNIST_DIR:-$(pwd)/../shared/data/mnist}"

# The engine of scripts/docker-engine.sh (its socket; HARNESS_DOCKER_ROOT moves it).
engine_sock="${HARNESS_DOCKER_ROOT:-/var/lib/harness-docker}/run/docker.sock"
if [[ -z "${DOCKER_HOST:-}" && -S "$engine_sock" ]]; then
  export DOCKER_HOST="unix://$engine_sock"
fi
# The one-node cluster of scripts/slurm-cluster.sh (HARNESS_SLURM_ROOT moves it).
slurm_conf="${HARNESS_SLURM_ROOT:-/var/lib/harness-slurm}/slurm.conf"
if [[ -z "${SLURM_CONF:-}" && -f "$slurm_conf" ]]; then
  export SLURM_CONF="$slurm_conf"
fi
# The wheelhouse .ci/run fills for offline workload-image builds.
wheelhouse=/tmp/harness-wheelhouse
if [[ -z "${HARNESS_WHEELHOUSE:-}" ]] && compgen -G "$wheelhouse/*.whl" >/dev/null; then
  export HARNESS_WHEELHOUSE="$wheelhouse"
fi

# No engine is needed when the docker tests are left out: -m "not docker" (or any -m expression
# that says "not docker"), or HARNESS_TEST_NO_ENGINE=1.
needs_engine=1
if [[ "${HARNESS_TEST_NO_ENGINE:-}" == 1 ]]; then
  needs_engine=0
fi
for arg in "$@"; do
  if [[ "$arg" == *"not docker"* ]]; then
    needs_engine=0
  fi
done

if [[ "$needs_engine" == 1 ]]; then
  if ! error="$(.venv/bin/python -c 'import docker; docker.from_env(timeout=20).ping()' 2>&1)"; then
    cat >&2 <<EOF
test.sh: no Docker engine reachable (DOCKER_HOST=${DOCKER_HOST:-unset}):
  ${error##*$'\n'}
The docker tests fail without one; start the harness's engine (installs it if missing, as root):
  eval "\$(bash scripts/docker-engine.sh start)"
then run this again (bash .ci/run starts it too, and builds the images and the wheelhouse),
or point DOCKER_HOST at a running engine, or leave the docker tests out:
  bash scripts/test.sh -m "not docker"      (or HARNESS_TEST_NO_ENGINE=1)
EOF
    exit 1
  fi
fi

exec .venv/bin/python -m pytest -q -ra --durations=15 "$@"
