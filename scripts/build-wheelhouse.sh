#!/usr/bin/env bash
# Fill a wheelhouse for offline workload-image builds (HARNESS_WHEELHOUSE):
# pytorch-lightning, lightning (lightning.pytorch, for users' modules written with it),
# torchmetrics, tensorboard and their dependencies at the versions the host
# venv has, without torch/torchvision (and their CUDA wheels): the base image supplies those;
# and einops, the workload.requirements of examples/own-workload (pyproject's dev extra pins it).
#
#   scripts/build-wheelhouse.sh DIR      # then: export HARNESS_WHEELHOUSE=DIR
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${HARNESS_HOST_PYTHON:-$HERE/.venv/bin/python}"
DEST="${1:?usage: $0 DIR}"
mkdir -p "$DEST"

pins="$("$PYTHON" - <<'PY'
"""Print name==version for the closure of the workload's extra requirements in this venv."""
from importlib.metadata import PackageNotFoundError, distribution
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOTS = ["pytorch-lightning", "lightning", "torchmetrics", "tensorboard", "einops"]
BASE = {"torch", "torchvision", "triton"}  # the base image's; never downloaded
seen, todo, pins = set(), [(r, ()) for r in ROOTS], []
while todo:
    raw, extras = todo.pop()
    name = canonicalize_name(raw)
    if (name, extras) in seen or name in BASE or name.startswith("nvidia-"):
        continue
    seen.add((name, extras))
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        continue
    pins.append(f"{dist.metadata['Name']}=={dist.version}")
    for line in dist.requires or []:
        req = Requirement(line)
        # Requirements of the extras asked for (fsspec[http] -> aiohttp) count too.
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            todo.append((req.name, tuple(sorted(req.extras))))
pins = sorted(set(pins))
print(" ".join(sorted(pins)))
PY
)"
echo "build-wheelhouse: $pins" >&2
# shellcheck disable=SC2086  # one word per pin
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$DEST" $pins 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
count="$(find "$DEST" -name '*.whl' | wc -l)"
echo "build-wheelhouse: $count wheels in $DEST" >&2
[[ "$count" -gt 0 ]]
