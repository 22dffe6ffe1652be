"""One row per cell, shared by the CSV and the Markdown table, so the two never drift."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from harness.report.report_data import EXPORTED, CellReport, Report
from harness.report.summaries import report_keys, workspace_in_force


def cell_row(cell: CellReport, keys: list[str] | None = None) -> dict[str, Any]:
    """One cell's row; ``keys`` are the setting columns (``rows`` gives every row the same:
    ``report_keys`` of all cells; default: this cell's)."""
    d = cell.first_divergence
    row: dict[str, Any] = {"id": cell.id, "name": cell.name}
    keys = report_keys([cell]) if keys is None else keys
    row.update({k: cell.settings.get(k) for k in keys})  # in the table's order
    # what the ok runs recorded in force ("auto" says only how it was chosen)
    row["cublas_workspace_in_force"] = ", ".join(workspace_in_force(cell)) or None
    row.update(
        repeats=cell.repeats,
        ok_runs=cell.ok_runs,
        distinct_trajectories=cell.distinct_trajectories,
        verdict=cell.verdict,
        reproducible=cell.reproducible,
        unknown_because=cell.unknown_because,
        divergence_epoch=d.epoch if d else None,
        divergence_batch=d.batch if d else None,
        divergence_step=d.step if d else None,
        max_abs_delta=d.max_abs_delta if d else None,
        max_ulps=d.max_ulps if d else None,
        init_weights_equal=cell.init_equal,
        final_weights_equal=cell.final_equal,
        val_acc_mean=cell.val_acc_mean,
        val_acc_sd=cell.val_acc_sd,
        seconds_per_epoch=cell.seconds_per_epoch,
        detail=cell.detail,
    )
    return row


def rows(report: Report) -> list[dict[str, Any]]:
    keys = report_keys(report.cells)
    return [cell_row(c, keys) for c in report.cells]


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get(EXPORTED, True)
        }
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):  # NaN and infinity are not JSON
        return None
    return value
