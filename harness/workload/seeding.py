"""The seed function and the determinism knobs, kept apart on purpose.

The post's ``torch_seed`` also sets ``cudnn.deterministic``/``cudnn.benchmark``. Here those flags
are axes of the matrix, set once at process start by ``apply_determinism``; if the seed function
set them too, a ``none`` cell (never seeded) and a seeded cell would differ in two things at once,
and the flags would silently change at the placement. See docs/workload.md.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterable

import numpy as np
import torch

from harness.contract import RunSpec


def seed_all(seed: int) -> None:
    """Seed exactly what the post's ``torch_seed`` seeds, minus the cuDNN flags."""
    torch.manual_seed(seed)
    torch.cuda.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    np.random.seed(seed)
    random.seed(seed)


def pin_threads(threads: int) -> None:
    """Pin torch's intra-op threads (the loss bits depend on it) and use one inter-op thread."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already started in this process
        pass


def apply_determinism(spec: RunSpec) -> None:
    """Set the cuDNN, TF32 and deterministic-algorithm flags once, at process start."""
    torch.backends.cudnn.deterministic = spec.cudnn_deterministic
    torch.backends.cudnn.benchmark = spec.cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = spec.allow_tf32
    torch.backends.cudnn.allow_tf32 = spec.allow_tf32
    if spec.deterministic_algorithms == "off":
        torch.use_deterministic_algorithms(False)
    else:
        torch.use_deterministic_algorithms(True, warn_only=spec.deterministic_algorithms == "warn")


# torch's alert: "<op> does not have a deterministic implementation, but you set ..."
_NONDET = re.compile(r"^(?P<op>.+?) does not have a deterministic implementation")


def nondeterministic_op(message: str) -> str | None:
    """The operation named by one of torch's nondeterminism warnings, else None."""
    match = _NONDET.match(message.strip())
    return match.group("op") if match else None


def nondeterministic_ops(caught: Iterable[warnings.WarningMessage]) -> list[str]:
    """Sorted, unique op names from warnings captured during training."""
    ops = {nondeterministic_op(str(w.message)) for w in caught}
    return sorted(op for op in ops if op)
