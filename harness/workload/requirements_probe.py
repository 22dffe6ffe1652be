"""Which of the matrix's ``workload.requirements`` the local interpreter has.

Run once per matrix run as ``python -m harness.workload.requirements_probe REQUIREMENT...``
with the runs' interpreter (``harness.executors.local_probes.check_requirements``): the
requirements come as argv, never as a shell line. Prints one line, ``REQUIREMENTS_MARK`` then a
JSON list of ``[requirement, installed version or null, satisfied]``. ``packaging`` comes with
Lightning; without it, only presence is checked.
"""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from harness.contract.probe_marks import REQUIREMENTS_MARK


def satisfies(text: str, have: str) -> bool:
    """Whether the installed version ``have`` satisfies the requirement ``text``; where
    ``packaging`` is missing, presence alone counts."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return True
    return bool(Requirement(text).specifier.contains(have, prereleases=True))


def found(requirements: list[str]) -> list[list[Any]]:
    """``[text, installed version or None, satisfied]`` for each requirement."""
    answers: list[list[Any]] = []
    for text in requirements:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", text)
        name = match.group(0) if match else text
        try:
            have: str | None = version(name)
        except PackageNotFoundError:
            have = None
        answers.append([text, have, have is not None and satisfies(text, have)])
    return answers


def main(argv: list[str]) -> int:
    print(REQUIREMENTS_MARK + json.dumps(found(argv)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
