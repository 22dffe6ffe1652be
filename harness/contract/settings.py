"""The one table of settings: every knob a cell can vary, declared once.

The run spec, the matrix models and their JSON Schema, the cell names, the report columns, the
determinism-cost twins and the settings table in docs/matrix.md are all derived from
``SETTINGS``. Adding a setting is one entry here, the place the workload applies it, and a test
(docs/contributing.md).

Standard library only: the workload side imports it inside the container.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.contract.machine import CPU_ISA_CHOICES, NATIVE

#: The post's seed (``torch_seed(random_seed=201014)``).
DEFAULT_SEED = 201014

#: ``local``, or a Docker image reference ([registry[:port]/]path[:tag][@sha256:digest]); no
#: spaces, quotes, shell or Markdown characters can pass, so an image name is safe everywhere.
IMAGE_PATTERN = (
    r"^(local|[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?)$"
)
IMAGE_MAX_LENGTH = 255

#: The largest seed numpy and Lightning take, and the largest ``PYTHONHASHSEED``: 2**32 - 1.
SEED_MAX = 2**32 - 1

#: The largest finite float: the JSON Schema's bound for every number, which keeps out .inf
#: (JSON itself has no infinity or NaN; the models and the spec refuse them too).
FLOAT_MAX = sys.float_info.max

#: ``cublas_workspace``: ``auto``, ``unset``, or one to eight ``:SIZE:COUNT`` pairs (SIZE in KiB,
#: COUNT buffers: cuBLAS's own syntax), each a positive number of at most 7 and 4 digits.
CUBLAS_WORKSPACE_PATTERN = r"^(auto|unset|(:[1-9][0-9]{0,6}:[1-9][0-9]{0,3}){1,8})$"
CUBLAS_WORKSPACE_WORDS = (
    "`auto`, `unset`, or `:SIZE:COUNT` pairs (SIZE KiB, COUNT buffers), e.g. `:4096:8` or "
    "`:4096:8:16:8`"
)

#: ``entry``: ``package.module:function``, the user's build function (docs/workload.md).
ENTRY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
ENTRY_WORDS = "`package.module:function`, e.g. `convnet:build` (or `null`: the built-in MNIST)"
#: ``params``: names the user's function reads; scalars only, so each can be a report column.
PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
PARAM_VALUE_TYPES = (bool, int, float, str)
PARAM_STRING_MAX = 200

#: Marks a setting without a nondeterministic twin value.
NO_TWIN: Any = object()


@dataclass(frozen=True)
class Setting:
    """One knob of a cell.

    ``kind`` is ``int``, ``float``, ``bool``, ``str``, ``image`` or ``params`` (a flat mapping
    of names to scalars, the user's build function's own knobs). ``positive`` asks for
    >= 1 (int) or > 0 (float); ``minimum`` and ``maximum`` bound a number (both inclusive); a
    float is always finite (no inf, no NaN); ``nullable`` admits ``null``. ``label`` prefixes
    the value in cell names; ``name_slot`` puts the setting in every cell name (settings of one
    slot are joined without a dash), else it is named only where it varies. ``twin`` is its
    value in the fully nondeterministic twin that the report measures the cost of determinism
    against. ``run_default``: ``run:`` in the matrix file may set its default for every cell.
    ``builtin_only``: read by the built-in MNIST experiment only; a cell with an ``entry`` (the
    user's build function) never reads it, so the matrix refuses it there (use ``params``).
    ``trains``: it says what is trained (the network, its hyperparameters, how long), not how
    the training runs: the report gives a recipe per value of it, and asks of the others only
    whether they change the bits (another training has other bits by definition).
    """

    name: str
    kind: str
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    positive: bool = False
    nullable: bool = False
    minimum: int | float | None = None
    maximum: int | float | None = None
    label: str = ""
    name_slot: int | None = None
    in_report: bool = False
    twin: Any = NO_TWIN
    run_default: bool = False
    pattern: str | None = None
    pattern_doc: str = ""
    builtin_only: bool = False
    trains: bool = False

    @property
    def python_type(self) -> type:
        kinds = {"int": int, "float": float, "bool": bool, "str": str, "image": str, "params": dict}
        return kinds[self.kind]

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not a value of this setting, or None when it is."""
        if value is None:
            return None if self.nullable else f"{self.name} must not be null"
        if self.kind == "params":
            return check_params(self.name, value)
        if self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            return f"{self.name} must be {self.describe()}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {', '.join(map(str, self.choices))}; got {value!r}"
        if self.kind in ("int", "float") and not self._in_range(value):
            return f"{self.name} must be {self.describe()}, got {value!r}"
        if self.kind == "image" and (
            len(value) > IMAGE_MAX_LENGTH or not re.match(IMAGE_PATTERN, value)
        ):
            return f"{self.name} must be local or a Docker image reference, got {value!r}"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"{self.name} must be {self.describe().replace('`', '')}, got {value!r}"
        return None

    def _in_range(self, value: int | float) -> bool:
        if self.kind == "float":
            try:
                if not math.isfinite(value):
                    return False
            except OverflowError:  # an int too large for a float
                return False
        if self.positive and (value < 1 if self.kind == "int" else not value > 0):
            return False
        if self.minimum is not None and value < self.minimum:
            return False
        return self.maximum is None or value <= self.maximum

    def describe(self) -> str:
        """The values it takes, in words (error messages and docs/matrix.md)."""
        if self.choices is not None:
            text = ", ".join(f"`{c}`" for c in self.choices)
        elif self.kind == "image":
            text = "`local` or a Docker image reference"
        elif self.kind == "params":
            text = "a mapping of names to numbers, strings or booleans"
        elif self.pattern is not None:
            text = self.pattern_doc or f"a string matching `{self.pattern}`"
        elif self.kind == "bool":
            text = "`true`, `false`"
        elif self.kind == "int":
            text = ("a positive integer" if self.positive else "an integer") + self._range()
        elif self.kind == "float":
            text = "a positive number" if self.positive else "a number"
            text += self._range() + " (finite)"
        else:
            text = "a string"
        return text + (" or `null`" if self.nullable else "")

    def _range(self) -> str:
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f" from {low} to {high}"
        if low is not None:
            return f" of at least {low}"
        return f" up to {high}" if high is not None else ""


def check_params(name: str, value: Any) -> str | None:
    """Why ``value`` is not a ``params`` mapping: flat, named like Python identifiers, each value
    a finite number, a string or a boolean."""
    if not isinstance(value, dict):
        return f"{name} must be a mapping of names to values, got {value!r}"
    for key, item in value.items():
        if not isinstance(key, str) or not re.fullmatch(PARAM_NAME_PATTERN, key):
            return f"{name}: {key!r} is not a name (letters, digits and _, not first a digit)"
        if not isinstance(item, PARAM_VALUE_TYPES) or (
            isinstance(item, float) and not math.isfinite(item)
        ):
            return f"{name}.{key} must be a number, a string or a boolean, got {item!r}"
        if isinstance(item, str) and len(item) > PARAM_STRING_MAX:
            return f"{name}.{key} must be at most {PARAM_STRING_MAX} characters long"
    return None


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "image", "image", "local", "`local` (this machine's Python) or a CUDA PyTorch image",
        name_slot=0, in_report=True,
    ),
    Setting("accelerator", "str", "cpu", "where it trains", choices=("cpu", "gpu"),
            name_slot=1, in_report=True),
    Setting("devices", "int", 1, "processes (GPUs) per run; 2 or more means DDP",
            positive=True, name_slot=1, in_report=True),
    Setting(
        "placement", "str", "before_model",
        "where the seed is set: nowhere, after the model and before the Trainer, before the "
        "model, or first thing in the process",
        choices=("none", "before_trainer", "before_model", "process_start"),
        name_slot=2, in_report=True,
    ),
    Setting(
        "model", "str", "mlp",
        "the network: `mlp`, the post's (no cuDNN call), or `cnn`, the PyTorch MNIST example "
        "(its convolutions go through cuDNN; dropout draws from the seeded generator)",
        choices=("mlp", "cnn"), in_report=True, builtin_only=True, trains=True,
    ),
    Setting(
        "cudnn_deterministic", "bool", True, "`torch.backends.cudnn.deterministic`",
        label="det", name_slot=3, in_report=True, twin=False,
    ),
    Setting(
        "cudnn_benchmark", "bool", False, "`torch.backends.cudnn.benchmark`",
        label="bench", name_slot=4, in_report=True, twin=True,
    ),
    Setting(
        "deterministic_algorithms", "str", "off",
        '`torch.use_deterministic_algorithms`: off, on, or on with warn_only (quote them: YAML '
        'reads bare off/on as booleans)',
        choices=("off", "on", "warn"), label="alg", name_slot=5, in_report=True, twin="off",
    ),
    Setting(
        "cublas_workspace", "str", "auto",
        "`CUBLAS_WORKSPACE_CONFIG` of the run: `auto` sets `:4096:8` when deterministic_algorithms "
        "is on or warn and leaves it unset when off; `unset` leaves it unset; or the value itself",
        pattern=CUBLAS_WORKSPACE_PATTERN, pattern_doc=CUBLAS_WORKSPACE_WORDS,
        label="ws", in_report=True, twin="unset",
    ),
    Setting(
        "threads", "int", 1, "torch intra-op threads per process (the loss bits depend on it)",
        positive=True, label="t", in_report=True, run_default=True,
    ),
    Setting(
        "allow_tf32", "bool", False, "TF32 in cuBLAS matmuls and cuDNN convolutions",
        label="tf32", in_report=True,
    ),
    Setting(
        "cpu_isa", "str", NATIVE,
        "the CPU code path: `native` (what this CPU and the environment give) or a ceiling that "
        "oneDNN, MKL and ATen may not exceed (`ATEN_CPU_CAPABILITY`, `ONEDNN_MAX_CPU_ISA`, "
        "`MKL_ENABLE_INSTRUCTIONS`, `MKL_CBWR`, set before torch is imported); an older CPU's "
        "code path on this one, not a copy of another machine (docs/results.md, \"Machines\")",
        choices=CPU_ISA_CHOICES, label="isa", in_report=True,
    ),
    Setting("seed", "int", DEFAULT_SEED, "the seed, at the placement", label="seed",
            run_default=True, minimum=0, maximum=SEED_MAX),
    Setting("epochs", "int", 1, "training epochs", positive=True, label="ep", run_default=True,
            trains=True),
    Setting(
        "max_steps_per_epoch", "int", None, "optimizer steps per epoch (`null`: the whole epoch)",
        positive=True, nullable=True, label="steps", run_default=True, trains=True,
    ),
    Setting("pythonhashseed", "int", 0, "`PYTHONHASHSEED` of the run's processes", label="phs",
            minimum=0, maximum=SEED_MAX),
    Setting("batch_size", "int", 32, "training batch size (the post's 32)", positive=True,
            label="bs", builtin_only=True, trains=True),
    Setting("learning_rate", "float", 1e-4, "Adam's learning rate (the post's 1e-4)",
            positive=True, label="lr", builtin_only=True, trains=True),
    Setting("hidden_size", "int", 64, "the `mlp`'s hidden width (the post's 64; `cnn` has none)",
            positive=True, label="h", builtin_only=True, trains=True),
    Setting(
        "entry", "str", None,
        "the training to run: `null`, the built-in MNIST experiment, or `package.module:function`, "
        "your build function (docs/workload.md); `workload.entry` sets it for every cell",
        nullable=True, pattern=ENTRY_PATTERN, pattern_doc=ENTRY_WORDS, label="", in_report=True,
        trains=True,
    ),
    Setting(
        "params", "params", {},
        "a mapping your build function receives (e.g. `{lr: 0.001}`); `workload.params` gives "
        "every cell's, an axis or include entry overrides some of them; each is a report column",
        in_report=True, trains=True,
    ),
)  # fmt: skip


def report_settings(table: tuple[Setting, ...]) -> tuple[str, ...]:
    """Settings shown as report and CSV columns, in table order."""
    return tuple(s.name for s in table if s.in_report)


def twin_of(table: tuple[Setting, ...]) -> dict[str, Any]:
    """The fully nondeterministic twin's values."""
    return {s.name: s.twin for s in table if s.twin is not NO_TWIN}


BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}
NAMES: tuple[str, ...] = tuple(s.name for s in SETTINGS)
DEFAULTS: Mapping[str, Any] = {s.name: s.default for s in SETTINGS}
REPORT_SETTINGS: tuple[str, ...] = report_settings(SETTINGS)
TWIN: Mapping[str, Any] = twin_of(SETTINGS)
#: Settings only the built-in MNIST experiment reads (``model``, ``hidden_size`` ...): refused
#: for a cell with an ``entry``, left out of its name, its report and "did you mean".
BUILTIN_ONLY: frozenset[str] = frozenset(s.name for s in SETTINGS if s.builtin_only)
#: Settings that say what is trained, not how it runs (``Setting.trains``); ``params`` stands for
#: each ``params.<key>`` of the report.
TRAINS: frozenset[str] = frozenset(s.name for s in SETTINGS if s.trains)
#: The settings every matrix digest has held since digests were pinned: the dump lists each of
#: them in axes, include and exclude (null where unused). A setting added later is left out of
#: the digest where the matrix does not use it (harness/matrix/cells.py), so adding one
#: changes no existing digest and old results folders still resume and compare.
DIGEST_SETTINGS = frozenset(
    {
        "image",
        "accelerator",
        "devices",
        "placement",
        "cudnn_deterministic",
        "cudnn_benchmark",
        "deterministic_algorithms",
        "threads",
        "allow_tf32",
        "seed",
        "epochs",
        "max_steps_per_epoch",
        "pythonhashseed",
        "batch_size",
        "learning_rate",
        "hidden_size",
    }
)
#: Settings that are part of a cell id even at their default.
ALWAYS_IN_ID: tuple[str, ...] = ("image",)


def identity(settings: Mapping[str, Any], table: tuple[Setting, ...] = SETTINGS) -> dict[str, Any]:
    """The part of a cell's settings that its id hashes: the image, and every setting that
    differs from its default. A setting added later with a default changes no existing id."""
    return {
        s.name: settings.get(s.name, s.default)
        for s in table
        if s.name in ALWAYS_IN_ID or settings.get(s.name, s.default) != s.default
    }
