"""The report's data: what ``analyze`` finds, before any format renders it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    """One repeat as the report sees it (from run.json alone)."""

    repeat: int
    status: str  # ok | failed | missing
    run_dir: Path
    trajectory: str | None = None
    init_weights: str | None = None
    final_weights: str | None = None
    steps: int = 0
    ranks: int = 1
    epoch_starts: list[tuple[int, int]] = field(default_factory=list)  # (epoch, first_step)
    val_acc: float | None = None
    seconds_per_epoch: float | None = None
    error: dict[str, Any] | None = None
    image_digest: str | None = None
    image_id: str | None = None
    torch: str | None = None


@dataclass
class Divergence:
    """Where a trajectory first differs from the reference one (0-based epoch, batch, step)."""

    repeat: int
    step: int
    epoch: int | None
    batch: int | None
    max_abs_delta: float | None
    max_ulps: int | None
    shape_differs: bool = False


@dataclass
class CellReport:
    id: str
    name: str
    settings: dict[str, Any]
    repeats: int
    ok_runs: int
    distinct_trajectories: int
    reproducible: bool | None
    first_divergence: Divergence | None
    divergences: list[Divergence]
    init_equal: bool | None
    final_equal: bool | None
    val_acc_mean: float | None
    val_acc_sd: float | None
    seconds_per_epoch: float | None
    verdict: str
    runs: list[RunResult] = field(default_factory=list)
    plot: str | None = None


@dataclass
class Comparison:
    """The same settings across one axis (image or devices): are the trajectories equal?"""

    axis: str
    settings: dict[str, Any]
    cells: list[tuple[str, str]]  # (axis value, cell name)
    equal: bool | None
    divergence: Divergence | None


@dataclass
class Cost:
    cell: str
    twin: str
    seconds_per_epoch: float | None
    twin_seconds_per_epoch: float | None

    @property
    def ratio(self) -> float | None:
        if not self.seconds_per_epoch or not self.twin_seconds_per_epoch:
            return None
        return self.seconds_per_epoch / self.twin_seconds_per_epoch


@dataclass
class Failure:
    cell: str
    repeat: int
    type: str
    message: str
    log_tail: str


@dataclass
class ImageInfo:
    """What each image of the matrix was, as its run records say: the digest pins it."""

    image: str
    digests: list[str]  # provenance.image_digest of its ok runs (one, unless it changed)
    image_ids: list[str]
    torch: list[str]
    cells: int


@dataclass
class Report:
    name: str
    root: Path
    cells: list[CellReport]
    summaries: dict[str, str]
    comparisons: list[Comparison]
    costs: list[Cost]
    failures: list[Failure]
    images: list[ImageInfo] = field(default_factory=list)
