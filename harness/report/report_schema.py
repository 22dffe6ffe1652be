"""report.json's JSON Schema (docs/report.schema.json is its copy; ``harness schema --report``).

Generated from the report's dataclasses where report.json holds them as they are (the answer,
comparisons, costs, failures, images, conflicts, diagnoses, machines), so the schema cannot
drift from what ``render_json`` writes; written out here for the two parts render_json reshapes
(a cell's runs, the table's rows), which name the keys every version has and admit new ones."""

from __future__ import annotations

import json
from typing import Any

from harness.report.answer_data import Answer
from harness.report.machines import MachineInfo
from harness.report.report_data import (
    Comparison,
    ConflictCopy,
    Cost,
    DiagnosisEntry,
    Failure,
    ImageInfo,
    ReportSource,
    ResultStatus,
    Verdict,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"

_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_BOOL = {"type": ["boolean", "null"]}

#: A run as report.json holds it (exporters._runs: no run_dir, the machine as its fingerprint).
_RUN = {
    "type": "object",
    "required": ["repeat", "status", "path", "trajectory", "machine"],
    "properties": {
        "repeat": {"type": "integer", "minimum": 0},
        "status": {"enum": [s.value for s in ResultStatus]},
        "path": {"type": "string"},
        "trajectory": _NULLABLE_STRING,
        "machine": _NULLABLE_STRING,
        "val_acc": {"type": ["number", "null"]},
        "val_loss": {"type": ["number", "null"]},
        "seconds_per_epoch": {"type": ["number", "null"]},
    },
}

_CELL = {
    "type": "object",
    "required": ["id", "name", "settings", "verdict", "reproducible", "runs", "control"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "settings": {"type": "object"},
        "verdict": {"enum": [v.value for v in Verdict]},
        "reproducible": _NULLABLE_BOOL,
        "unknown_because": _NULLABLE_STRING,
        "control": {"type": "boolean"},
        "runs": {"type": "array", "items": _RUN},
        "conflict_copies": {"type": "array", "items": _RUN},
    },
}

_ROW = {
    "type": "object",
    "required": ["id", "name", "verdict", "reproducible"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "verdict": {"enum": [v.value for v in Verdict]},
        "reproducible": _NULLABLE_BOOL,
    },
}


def _of(kind: type, defs: dict[str, Any]) -> dict[str, Any]:
    """``kind``'s schema from its dataclass, its nested definitions moved into ``defs``."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(kind).json_schema(mode="serialization", ref_template="#/$defs/{model}")
    defs.update(schema.pop("$defs", {}))
    return schema


def report_schema() -> dict[str, Any]:
    """The schema of report.json (format_version 2)."""
    from harness.report.exporters import REPORT_FORMAT_VERSION

    defs: dict[str, Any] = {}

    def listed(kind: type) -> dict[str, Any]:
        return {"type": "array", "items": _of(kind, defs)}

    cost = _of(Cost, defs)
    cost["properties"]["ratio"] = {"type": ["number", "null"]}
    cost["required"] = [*cost.get("required", []), "ratio"]
    properties: dict[str, Any] = {
        "format_version": {"const": REPORT_FORMAT_VERSION},
        "name": {"type": "string"},
        "source": {"enum": [s.value for s in ReportSource]},
        "summaries": {"type": "object", "additionalProperties": {"type": "string"}},
        "cells": {"type": "array", "items": _CELL},
        "table": {"type": "array", "items": _ROW},
        "comparisons": listed(Comparison),
        "costs": {"type": "array", "items": cost},
        "failures": listed(Failure),
        "images": listed(ImageInfo),
        "conflicts": listed(ConflictCopy),
        "mixed_code": {"type": "array", "items": {"type": "string"}},
        "diagnoses": listed(DiagnosisEntry),
        "machines": listed(MachineInfo),
        "answer": _of(Answer, defs),
    }
    return {
        "$schema": DRAFT,
        "title": "harness report.json",
        "description": "The reproducibility report of a results folder (docs/results.md).",
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "$defs": dict(sorted(defs.items())),
    }


def report_schema_text() -> str:
    return json.dumps(report_schema(), indent=2, sort_keys=True) + "\n"
