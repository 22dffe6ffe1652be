"""Shards: split a matrix's cells over N machines so that each shard takes about as long.

Why whole cells: a cell's repeats must run in one place for its verdict (and for merge to
find each run once). Why greedy longest-processing-time first: it is deterministic, simple,
and within 4/3 of the best split; an exact split is NP-hard and buys little here.

The expected cost of a cell (arbitrary units, only ratios matter)::

    epochs x steps per epoch x repeats x COST_FACTOR[accelerator]

``steps per epoch`` is ``max_steps_per_epoch``, or MNIST's full epoch (1,719 steps of batch 32
over 55,000 training images) when it is null, scaled by ``32 / batch_size``. COST_FACTOR says a
CPU step costs several GPU steps (docs/github-actions.md). ``harness plan --shards`` and
``harness run --shard`` call the same ``assign`` so they always agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.matrix import Cell, LoadedMatrix
from harness.run.schedule import need_of

#: GitHub Actions runs at most 256 jobs from one matrix.
MAX_SHARDS = 256

#: Training images after the post's 55,000 / 5,000 split; at batch 32 that is 1,719 steps.
TRAIN_IMAGES = 55_000

#: Relative cost of one optimizer step. On a 2-core CPU test machine a CPU step of the post's
#: model took about 1 ms (1,719 steps in about 1.5 s); a GPU step of so small a model is
#: launch-bound, assumed here at about a third of that (an estimate: no GPU was at hand to
#: measure it). Only the ratio matters for balancing.
COST_FACTOR = {"gpu": 1.0, "cpu": 3.0}

_SHARD_TEXT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` (1-based) of ``total``."""

    index: int
    total: int

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


@dataclass
class Shard:
    index: int
    total: int
    cells: list[Cell] = field(default_factory=list)
    cost: float = 0.0
    gpus: int = 0  # the most GPUs one of its runs needs: what its runner must have

    def to_github(self) -> dict[str, Any]:
        return {
            "shard": f"{self.index}/{self.total}",
            "index": self.index,
            "total": self.total,
            "cells": len(self.cells),
            "gpus": self.gpus,
        }


def parse_shard(text: str) -> ShardSpec:
    """``"2/4"`` -> ShardSpec(2, 4); anything else is a user error naming the form."""
    match = _SHARD_TEXT.match(text)
    if not match:
        raise HarnessError(f"cannot read shard {text!r}", "write it as I/N, e.g. --shard 2/4")
    index, total = int(match.group(1)), int(match.group(2))
    check_total(total)
    if not 1 <= index <= total:
        raise HarnessError(
            f"shard {text!r}: the index must be between 1 and {total}", "e.g. --shard 1/4"
        )
    return ShardSpec(index, total)


def check_total(total: int) -> None:
    if total < 1:
        raise HarnessError(f"--shards {total}: need at least one shard", "e.g. --shards 4")
    if total > MAX_SHARDS:
        raise HarnessError(
            f"--shards {total} is more than GitHub Actions' {MAX_SHARDS} jobs per matrix",
            f"use at most {MAX_SHARDS} shards; each shard runs several cells",
        )


def steps_per_epoch(settings: dict[str, Any]) -> int:
    full = math.ceil(TRAIN_IMAGES / int(settings.get("batch_size") or 32))
    limit = settings.get("max_steps_per_epoch")
    return min(full, int(limit)) if limit else full


def cell_cost(cell: Cell, repeats: int) -> float:
    """Expected run time of all of a cell's repeats, in GPU-step units."""
    s = cell.settings
    factor = COST_FACTOR.get(str(s.get("accelerator")), COST_FACTOR["cpu"])
    return int(s.get("epochs") or 1) * steps_per_epoch(s) * repeats * factor


def cell_gpus(cell: Cell) -> int:
    return need_of(cell.spec(0)).gpus


def assign(cells: list[Cell], repeats: int, total: int) -> list[Shard]:
    """Split ``cells`` into ``total`` shards (some empty when there are fewer cells).

    Longest first: cells sorted by (cost, GPUs) descending, ties by cell id, each to the shard
    with the least cost so far; among equal costs the one whose GPU need grows least, then the
    lowest index. Each shard's cells keep the matrix order.
    """
    check_total(total)
    shards = [Shard(i + 1, total) for i in range(total)]
    order = {c.id: i for i, c in enumerate(cells)}
    ranked = sorted(cells, key=lambda c: (-cell_cost(c, repeats), -cell_gpus(c), c.id))
    for cell in ranked:
        cost, gpus = cell_cost(cell, repeats), cell_gpus(cell)
        target = min(shards, key=lambda s: (s.cost, max(s.gpus, gpus) - s.gpus, s.index))
        target.cells.append(cell)
        target.cost += cost
        target.gpus = max(target.gpus, gpus)
    for shard in shards:
        shard.cells.sort(key=lambda c: order[c.id])
    return shards


def plan_shards(matrix: LoadedMatrix, total: int) -> list[Shard]:
    """The shard jobs for ``--shards total``: never more jobs than cells, none empty."""
    check_total(total)
    effective = max(1, min(total, len(matrix.cells)))
    return assign(matrix.cells, matrix.model.run.repeats, effective)


def cells_of_shard(matrix: LoadedMatrix, shard: ShardSpec) -> list[Cell]:
    """The cells ``harness run --shard I/N`` runs: the same split as ``plan_shards``."""
    return assign(matrix.cells, matrix.model.run.repeats, shard.total)[shard.index - 1].cells


def github_matrix(shards: list[Shard]) -> dict[str, Any]:
    """What ``strategy.matrix: ${{ fromJSON(...) }}`` takes."""
    return {"include": [s.to_github() for s in shards]}
