"""What the local interpreter's runs would record: its Python and torch versions and the digest
of the workload code it imports (their record's provenance.python, provenance.torch and
provenance.workload_digest).

Run once per matrix run as ``python -m harness.workload.identity_probe`` with the runs'
interpreter, from an empty folder (``harness.executors.local_probes.probe_identity``); prints
one line, ``IDENTITY_MARK`` then a JSON object. Torch is optional: without it, ``torch`` is null.
"""

from __future__ import annotations

import json
import sys

from harness.contract.code import workload_digest
from harness.contract.probe_marks import IDENTITY_MARK


def main() -> int:
    try:
        import torch

        version: str | None = str(torch.__version__)
    except ImportError:
        version = None
    identity = {
        "python": sys.version.split()[0],
        "torch": version,
        "workload_digest": workload_digest(),
    }
    print(IDENTITY_MARK + json.dumps(identity), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
