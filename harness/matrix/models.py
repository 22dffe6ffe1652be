"""The matrix file's pydantic models, derived from the one table of settings.

``CellSettings`` (a cell's full settings), ``Axes`` (a list of values per setting) and ``Patch``
(an include/exclude entry: single values) are built from ``SETTINGS`` with ``create_model``; a new
setting appears in all three, and in the JSON Schema, without an edit here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    create_model,
)
from pydantic_core import PydanticCustomError

from harness.contract.settings import (
    ENTRY_PATTERN,
    FLOAT_MAX,
    IMAGE_MAX_LENGTH,
    IMAGE_PATTERN,
    PARAM_NAME_PATTERN,
    PARAM_STRING_MAX,
    SETTINGS,
    Setting,
)
from harness.contract.spec import DEFAULT_DDP_TIMEOUT_S, FAULT_KINDS
from harness.executors.base import DEFAULT_MEMORY_LIMIT

DEFAULT_MAX_RUNS = 2000

Image = Annotated[str, Field(pattern=IMAGE_PATTERN, max_length=IMAGE_MAX_LENGTH)]


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic's lax float would take true as 1.0
        raise PydanticCustomError("float_type", "Input should be a number, not true or false")
    return value


def finite(*constraints: Any) -> Any:
    """A finite float within ``constraints`` (annotated_types bounds).

    Lax on purpose: PyYAML reads ``1e-4`` (no dot) as a string, which pydantic parses; but never
    a boolean, inf or NaN (``.inf``, ``.nan``, ``1e400``). The JSON Schema says finite the only
    way it can: a ``maximum`` (and ``minimum``) at the largest float. (The constraints sit
    before the validator in one Annotated, or the schema shows them as raw ``gt``/``le``.)
    """
    low = [] if any(isinstance(c, Gt | Ge) for c in constraints) else [Ge(-FLOAT_MAX)]
    high = [] if any(isinstance(c, Le) for c in constraints) else [Le(FLOAT_MAX)]
    parts = (float, AllowInfNan(False), *low, *constraints, *high, BeforeValidator(_not_a_bool))
    return Annotated[parts]


#: ``params``: a flat mapping of identifier-like names to scalars (settings.check_params).
#: (Run-time types, built by ``finite``: ``Any`` to a type checker.)
ParamValue: Any = (
    StrictBool | StrictInt | finite() | Annotated[str, Field(max_length=PARAM_STRING_MAX)]
)
Params: Any = dict[Annotated[str, Field(pattern=PARAM_NAME_PATTERN)], ParamValue]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def value_type(setting: Setting) -> Any:
    """The pydantic type of one value of a setting (strict: no silent "2" -> 2)."""
    if setting.kind == "params":
        base: Any = Params
    elif setting.kind == "image":
        base = Image
    elif setting.choices is not None and setting.kind != "bool":
        base = Literal[setting.choices]
    elif setting.kind == "bool":
        base = StrictBool
    elif setting.kind == "int":
        bounds = _bounds(setting, Ge(1) if setting.positive else None)
        parts = (StrictInt, *bounds)
        base = Annotated[parts] if bounds else StrictInt
    elif setting.kind == "float":
        base = finite(*_bounds(setting, Gt(0) if setting.positive else None))
    elif setting.pattern is not None:
        base = Annotated[str, Field(pattern=setting.pattern)]
    else:
        base = str
    return base | None if setting.nullable else base


def _bounds(setting: Setting, positive: Any) -> list[Any]:
    """The table's bounds of a number: ``positive`` (Ge(1) or Gt(0), or None), then its
    inclusive ``minimum`` and ``maximum``."""
    found = [positive] if positive is not None else []
    found += [Ge(setting.minimum)] if setting.minimum is not None else []
    return found + ([Le(setting.maximum)] if setting.maximum is not None else [])


def _field(setting: Setting, description: str) -> Any:
    """A setting's pydantic field; a mapping default (``params``) is a fresh copy each time."""
    if isinstance(setting.default, dict):
        default = dict(setting.default)
        return Field(default_factory=lambda: dict(default), description=description)
    return Field(setting.default, description=description)


def _cell_settings(table: tuple[Setting, ...]) -> type[Strict]:
    fields = {s.name: (value_type(s), _field(s, s.doc)) for s in table}
    model = create_model("CellSettings", __base__=Strict, **fields)  # type: ignore[call-overload]
    model.__doc__ = "One cell's full settings, typed: every entry of the settings table."
    return model


def _axes(table: tuple[Setting, ...]) -> type[Strict]:
    fields = {
        s.name: (
            list[value_type(s)] | None,  # type: ignore[misc]
            Field(None, min_length=1, description=f"values of {s.name}: {s.doc}"),
        )
        for s in table
    }
    model = create_model("Axes", __base__=Strict, **fields)  # type: ignore[call-overload]
    model.__doc__ = "Each axis is a non-empty list of values of one cell setting."
    return model


def _patch(table: tuple[Setting, ...]) -> type[Strict]:
    fields = {s.name: (value_type(s) | None, Field(None, description=s.doc)) for s in table}
    model = create_model("Patch", __base__=Strict, **fields)  # type: ignore[call-overload]
    model.__doc__ = "An include/exclude entry: some cell settings, each a single value."
    return model


class TestFault(Strict):
    """TEST ONLY (harness's own fault tests): make one rank of every run fail on purpose."""

    __test__ = False  # not a pytest class, whatever its name

    kind: Literal[FAULT_KINDS] = Field(  # type: ignore[valid-type]
        description="raise: an exception; cuda_error: a sticky device-side assert (on the CPU "
        "an IndexError); hang: sleep until a signal"
    )
    rank: StrictInt = Field(0, ge=0, description="the global rank that fails")
    step: StrictInt = Field(0, ge=0, description="as this optimizer step (0-based) starts")


class RunOptions(Strict):
    """How every cell runs, besides the settings (``RunBlock`` adds their defaults)."""

    repeats: StrictInt = Field(3, ge=1, description="runs per cell")
    timeout_s: finite(Gt(0)) = Field(3600.0, description="per run, in seconds")  # type: ignore[valid-type]
    max_runs: StrictInt = Field(
        DEFAULT_MAX_RUNS, ge=1, description="refuse matrices with more runs than this"
    )
    memory_limit: str | None = Field(
        DEFAULT_MEMORY_LIMIT,
        pattern=r"^[1-9][0-9]*[bkmg]?$",
        description=f"memory per container (docker executor), e.g. 4g (default "
        f"{DEFAULT_MEMORY_LIMIT}); null: no limit",
    )
    ddp_timeout_s: finite(Gt(0)) | None = Field(  # type: ignore[valid-type]
        None,
        description="timeout of DDP collectives, in seconds: a rank left waiting for a dead one "
        f"fails after this long; null: {DEFAULT_DDP_TIMEOUT_S:g}",
    )
    test_fault: TestFault | None = Field(
        None, description="TEST ONLY: make one rank of every run fail on purpose"
    )
    count_host_syncs: StrictBool = Field(
        False,
        description="count the host syncs of the training steps on a GPU "
        "(torch.cuda.set_sync_debug_mode) into the record's host_syncs; measures, not for "
        "timing runs",
    )


#: A pip requirement as the ``workload.requirements`` list takes it: a name with extras, a
#: version specifier and markers, but never an option (a leading ``-``) or a URL, path or shell
#: character; pip receives each as one argument.
_VERSION = r"[<>=!~]=?[A-Za-z0-9.*+!_-]+"
REQUIREMENT_PATTERN = (
    rf"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?({_VERSION}(,{_VERSION})*)?$"
)


class WorkloadBlock(Strict):
    """``workload:``: your own training instead of the built-in MNIST experiment."""

    entry: Annotated[str, Field(pattern=ENTRY_PATTERN)] | None = Field(
        None,
        description="your build function, `package.module:function`; null: the built-in MNIST "
        "experiment (the default for every cell; an axis or include entry may override it)",
    )
    path: str | None = Field(
        None,
        description="the folder holding your code, relative to the matrix file; put on the "
        "import path, mounted read-only in containers",
    )
    requirements: list[Annotated[str, Field(pattern=REQUIREMENT_PATTERN, max_length=200)]] = Field(
        default_factory=list,
        description="extra pip packages installed into the workload image when it is built, "
        "e.g. `einops==0.8.1` (the local executor uses the environment as it is)",
    )
    params: Params = Field(
        default_factory=dict,
        description="every cell's params (a mapping your build function receives); an axis or "
        "include entry overrides some of them",
    )


#: A Slurm name (partition, account, QoS, GRES type): what ``sbatch`` takes, nothing a batch
#: script line could read as more than one value.
SLURM_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.,:+-]*$"
#: A Slurm time limit: minutes, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM`` or
#: ``D-HH:MM:SS`` (sbatch's own forms).
SLURM_TIME_PATTERN = r"^([0-9]+-[0-9]{1,2}(:[0-9]{1,2}){0,2}|[0-9]+(:[0-9]{1,2}){0,2})$"
#: One extra sbatch option, ``--name`` or ``--name=value``: a value of printable characters
#: without blanks or quotes, so that it is one option on its ``#SBATCH`` line.
SBATCH_OPTION_PATTERN = r"^--[A-Za-z][A-Za-z0-9-]*(=[^\s\"'\\]+)?$"


class SlurmBlock(Strict):
    """``slurm:``: how ``harness submit slurm`` asks for resources; the command's options
    override each key. Not part of what a cell runs: the matrix digest leaves it out."""

    partition: Annotated[str, Field(pattern=SLURM_NAME_PATTERN, max_length=200)] | None = Field(
        None, description="the partition (queue) of every job, e.g. gpu; null: the default one"
    )
    account: Annotated[str, Field(pattern=SLURM_NAME_PATTERN, max_length=200)] | None = Field(
        None, description="the account charged; null: your default account"
    )
    qos: Annotated[str, Field(pattern=SLURM_NAME_PATTERN, max_length=200)] | None = Field(
        None, description="the quality of service; null: the default"
    )
    time: Annotated[str, Field(pattern=SLURM_TIME_PATTERN, max_length=20)] | None = Field(
        None,
        description="the time limit of each array task, as sbatch writes it (e.g. 2:00:00, "
        "1-12:00:00); null: from run.timeout_s and the shard's runs (the worst case)",
    )
    gpu_type: Annotated[str, Field(pattern=SLURM_NAME_PATTERN, max_length=100)] | None = Field(
        None, description="the GPU type of the request, --gres=gpu:TYPE:K (e.g. a100); null: any"
    )
    cpus_per_task: StrictInt | None = Field(
        None,
        ge=1,
        le=4096,
        description="CPUs per array task; null: the most cores one run of the shard needs "
        "(threads x devices), so its runs go one at a time; more lets runs go side by side",
    )
    sbatch: list[Annotated[str, Field(pattern=SBATCH_OPTION_PATTERN, max_length=300)]] = Field(
        default_factory=list,
        description="extra #SBATCH options of every job, e.g. --mem=16G or --constraint=h100",
    )
    executor: Literal["auto", "local", "docker"] = Field(
        "auto",
        description="how each task runs its runs: local processes in the harness's Python, or "
        "Docker containers where the nodes have an engine (docs/slurm.md); auto as harness run",
    )
    python: str | None = Field(
        None,
        max_length=255,
        description="the Python the jobs run, with the harness installed, as the nodes see it "
        "(an absolute path); null: the one running harness submit",
    )
    data_dir: str | None = Field(
        None,
        max_length=4096,
        description="the MNIST folder as the nodes see it (a shared file system; a relative "
        "path starts at the matrix file's folder); null: HARNESS_MNIST_DIR when submitting",
    )


def _run_block(table: tuple[Setting, ...]) -> type[Strict]:
    fields = {
        s.name: (value_type(s), _field(s, f"default {s.name}: {s.doc}"))
        for s in table
        if s.run_default
    }
    model = create_model("RunBlock", __base__=RunOptions, **fields)  # type: ignore[call-overload]
    model.__doc__ = "``run:``: how every cell runs, and defaults of some settings for every cell."
    return model


def make_models(table: tuple[Setting, ...] = SETTINGS) -> dict[str, type[Strict]]:
    """CellSettings, Axes, Patch and Matrix for a settings table (tests pass an extended one)."""
    cell, axes, patch = _cell_settings(table), _axes(table), _patch(table)
    run = _run_block(table)
    matrix = create_model(
        "Matrix",
        __base__=Strict,
        name=(str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=80)),
        run=(run, Field(default_factory=run)),
        workload=(WorkloadBlock, Field(default_factory=WorkloadBlock)),
        axes=(axes, Field(default_factory=axes)),
        include=(list[patch], Field(default_factory=list)),  # type: ignore[valid-type]
        exclude=(list[patch], Field(default_factory=list)),  # type: ignore[valid-type]
        slurm=(SlurmBlock | None, Field(None, description="harness submit slurm's requests")),
        control=(
            StrictBool,
            Field(
                False,
                description="add to each image one control cell that must not reproduce: the "
                "image's first cell with placement none (an existing cell with those settings "
                "is marked instead); if it reproduces, the report gives no reproduces verdict "
                "on that image (`harness run --control` sets it for one run)",
            ),
        ),
    )
    matrix.__doc__ = "The whole matrix file."
    return {"CellSettings": cell, "Axes": axes, "Patch": patch, "RunBlock": run, "Matrix": matrix}


_MODELS = make_models()
CellSettings: Any = _MODELS["CellSettings"]
Axes: Any = _MODELS["Axes"]
Patch: Any = _MODELS["Patch"]
RunBlock: Any = _MODELS["RunBlock"]
Matrix: Any = _MODELS["Matrix"]


def json_schema(matrix: type[BaseModel] = Matrix) -> dict[str, Any]:
    schema = matrix.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "harness matrix"
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
