"""What ``replay.json`` and ``diagnosis.json`` must hold before the host uses them.

Both lie in a results folder, which anything can have written (a replay's own workload, a
hand edit, a tampered copy): each is checked against a pydantic model, strictly typed like a
run record (harness/results/run_reader.py), before a field is read. A replay that is not one is a
clear
``HarnessError`` of ``harness diagnose``; a diagnosis that is not one is named on stderr and
left out of the report, never a traceback. Keys a newer harness adds are kept, not refused.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import HarnessError


class _Checked(BaseModel):
    """Strict types (no ``"5"`` for 5), unknown keys kept as they are."""

    model_config = ConfigDict(strict=True, extra="allow")


class Tensor(_Checked):
    """A tensor as a replay describes it: shape, dtype and (where hashed) its hash."""

    shape: list[int]
    dtype: str
    hash: str | None = None


class LoggedOp(_Checked):
    """One logged operation (or module-level event) of a logged step."""

    index: int = Field(ge=0)
    op: str
    phase: str
    module: str | None = None
    tensors: list[str] = Field(default_factory=list)
    inputs: list[Tensor] = Field(default_factory=list)
    outputs: list[Tensor]


class ReplayFile(_Checked):
    """replay.json: what harness/diagnose/findings.py compares of two replays."""

    steps: int = Field(ge=0)
    level: str
    debug_mode: bool = True
    parameters: list[str]
    module_types: dict[str, str] = Field(default_factory=dict)
    init: list[str]
    state_names: list[str] = Field(default_factory=list)
    #: null: the tensor did not exist after that step (an optimizer's state appears later)
    states: list[list[str | None]] = Field(default_factory=list)
    batches: list[list[str]] = Field(default_factory=list)
    logged_steps: list[int] = Field(default_factory=list)
    ops: dict[str, list[LoggedOp]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rows_fit_their_names(self) -> ReplayFile:
        """One initial hash per parameter and one state hash per state name in every row:
        findings.py pairs them by position."""
        if len(self.init) != len(self.parameters):
            raise ValueError(
                f"{len(self.init)} initial hashes for {len(self.parameters)} parameters"
            )
        for step, row in enumerate(self.states):
            if len(row) != len(self.state_names):
                raise ValueError(
                    f"states row {step} has {len(row)} hashes for "
                    f"{len(self.state_names)} state names"
                )
        return self


class ShownOp(_Checked):
    """The first differing operation, as the diagnosis table shows it."""

    step: int
    phase: str
    op: str
    module: str | None = None
    inputs: list[Tensor] = Field(default_factory=list)
    outputs: list[Tensor] = Field(default_factory=list)
    inputs_equal: bool | None = None
    max_abs_delta: float | None = None
    max_ulps: int | None = None


class ShownFinding(_Checked):
    kind: str
    op: ShownOp | None = None


class ShownRun(_Checked):
    cell_id: str


class DiagnosisFile(_Checked):
    """diagnosis.json, as far as the report reads it."""

    title: str
    runs: list[ShownRun] = Field(min_length=1)
    sentences: list[str]
    finding: ShownFinding


def why_invalid(exc: ValidationError) -> str:
    """The first problem, where it is: ``finding.op.max_abs_delta: Input should be ...``."""
    first = exc.errors()[0]
    where = ".".join(map(str, first["loc"])) or "the file"
    return f"{where}: {first['msg']}"


def replay_data(label: str, data: Any, path: Any) -> dict[str, Any]:
    """replay.json's content checked: a HarnessError naming the file and the first problem
    when it is not what a replay writes."""
    try:
        return ReplayFile.model_validate(data).model_dump()
    except ValidationError as exc:
        raise HarnessError(
            f"the replay of {label} wrote a {path} that is not a replay's record "
            f"({why_invalid(exc)})",
            "run the diagnosis again; if it says so again, the workload's replay and this "
            "harness do not match (reinstall the harness where the runs ran)",
        ) from None


def diagnosis_data(data: Any) -> DiagnosisFile:
    """diagnosis.json's content checked; pydantic's ValidationError when it is not one."""
    return DiagnosisFile.model_validate(data)
