"""The trajectory digest (``digests.trajectory``, ``digests.epochs``): one definition, which the
workload records and the host checks ``losses.npy`` against.

Standard library only, like all of contract/: the array is numpy's on both sides, and converts
itself (``astype``, ``tobytes``), so this module imports no numpy.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: The bytes hashed: float32, little-endian, C order ([steps, ranks], row by row).
TRAJECTORY_DTYPE = "<f4"


def trajectory_sha256(losses: Any) -> str:
    """sha256 of the float32 little-endian C-order bytes of a [steps, ranks] loss array (a
    numpy array, of any float dtype or layout: it is converted first)."""
    return hashlib.sha256(losses.astype(TRAJECTORY_DTYPE).tobytes()).hexdigest()
