#!/usr/bin/env bash
# Build, offline, a CPU stand-in for a CUDA PyTorch base image, with the same torch and
# torchvision wheels as the host venv (no registry is reachable here, so no image can be pulled).
#
#   scripts/build-standin-base.sh            # skips when the image already exists
#   HARNESS_STANDIN_FORCE=1 scripts/build-standin-base.sh
#
# Needs a running engine (scripts/docker-engine.sh start; DOCKER_HOST exported) and Debian's
# /usr/bin/docker client (BuildKit built in; the /usr/local/bin/docker 28.2 client has no buildx
# and its legacy builder rejects RUN --mount). Steps:
#   1. mmdebstrap a minimal bookworm (python3, venv, pip) piped into `docker import`;
#   2. `pip download` torch/torchvision/numpy at the host venv's versions into a temp folder;
#   3. BuildKit build of docker/standin-base/Dockerfile with --network none;
#   4. remove the wheels, the intermediate Debian image and the build cache.
# The Debian mirror is read from /etc/apt/sources.list.d/debian.sources at run time.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${HARNESS_STANDIN_TAG:-harness-standin/pytorch:2.14.1-cpu}"
DEBIAN_TAG="harness-standin/debian:bookworm"
PYTHON="${HARNESS_HOST_PYTHON:-$HERE/.venv/bin/python}"
DOCKER=/usr/bin/docker

log() { echo "build-standin-base: $*" >&2; }

if [[ -z "${DOCKER_HOST:-}" ]]; then
  log "DOCKER_HOST is not set; run: eval \"\$(scripts/docker-engine.sh start)\""
  exit 1
fi
if [[ -z "${HARNESS_STANDIN_FORCE:-}" ]] && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  log "$TAG exists; skipping (HARNESS_STANDIN_FORCE=1 rebuilds)"
  exit 0
fi

mirror() {
  # First "URIs:" of the stanza whose Suites name bookworm (not -security).
  awk '/^URIs:/ {uri=$2} /^Suites:/ && / bookworm( |$)/ {print uri; exit}' \
    /etc/apt/sources.list.d/debian.sources
}

# Pin what the host venv has, so the container computes with the very same wheels.
versions="$("$PYTHON" - <<'PY'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("torch", "torchvision", "numpy")))
PY
)"
log "requirements: $versions"

if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >&2 \
    || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >&2; }
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/standin-base.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$HERE/docker/standin-base/Dockerfile" "$work/Dockerfile"

if ! "$DOCKER" image inspect "$DEBIAN_TAG" >/dev/null 2>&1; then
  MIRROR="$(mirror)"
  [[ -n "$MIRROR" ]] || { log "no bookworm mirror in /etc/apt/sources.list.d/debian.sources"; exit 1; }
  log "mmdebstrap bookworm -> $DEBIAN_TAG"
  mmdebstrap --quiet --variant=minbase \
    --include=ca-certificates,python3,python3-venv,python3-pip \
    bookworm - "deb $MIRROR bookworm main" | "$DOCKER" import - "$DEBIAN_TAG" >/dev/null
fi

log "pip download $versions"
"$PYTHON" -m pip download --quiet --only-binary=:all: -d "$work/wheels" $versions >&2

log "building $TAG (BuildKit, --network none)"
DOCKER_BUILDKIT=1 "$DOCKER" build --network none --progress plain \
  --build-arg DEBIAN_IMAGE="$DEBIAN_TAG" \
  --build-arg TORCH_REQUIREMENTS="$versions" \
  -t "$TAG" "$work" >&2

log "cleaning: wheels, $DEBIAN_TAG, build cache"
rm -rf "$work/wheels"
"$DOCKER" image rm "$DEBIAN_TAG" >/dev/null || true
"$DOCKER" builder prune -af >/dev/null || true
log "done: $TAG ($("$DOCKER" image inspect -f '{{.Id}}' "$TAG"))"
