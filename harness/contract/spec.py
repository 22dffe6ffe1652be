"""``spec.json``: one repeat of one cell, the run's identity.

The spec holds the cell's settings (every entry of the settings table) and which repeat this is;
where things are (the data folder) and what the host learnt about the image (digest, id) travel
beside it, as workload arguments and environment, so a spec never changes with the machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.contract.machine import ISA_ENV_VARS, NATIVE, isa_environment
from harness.contract.settings import SETTINGS, Setting

SPEC_FORMAT_VERSION = 2

#: Environment variables that change numerics; recorded in every run record's provenance.
NUMERIC_ENV_VARS = (
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_LAUNCH_BLOCKING",
    "CUDA_VISIBLE_DEVICES",
    "CUDNN_LOGINFO_DBG",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "TORCH_CUDNN_V8_API_DISABLED",
    "CUBLASLT_WORKSPACE_SIZE",
    "DISABLE_ADDMM_CUDA_LT",
    "CUDA_DEVICE_ORDER",
    "CUDA_MODULE_LOADING",
    "NCCL_ALGO",
    "NCCL_PROTO",
    "NCCL_MIN_NCHANNELS",
    "NCCL_MAX_NCHANNELS",
    # NCCL's transport switches: which path (NVLink, PCIe, shared memory, network) a
    # collective takes can change its reduction order
    "NCCL_P2P_DISABLE",
    "NCCL_SHM_DISABLE",
    "NCCL_IB_DISABLE",
    "NCCL_NET",
    "NCCL_P2P_LEVEL",
    "NCCL_NVLS_ENABLE",
    "NCCL_COLLNET_ENABLE",
    "NCCL_CUMEM_ENABLE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "PYTHONHASHSEED",
    # the CPU code path (the cpu_isa setting, or a limit the starter exported)
    *ISA_ENV_VARS,
)

#: Deterministic cuBLAS needs this set before CUDA is initialised (torch docs, "Reproducibility").
CUBLAS_WORKSPACE_DETERMINISTIC = ":4096:8"

#: What the host knows about the image a run uses, passed to the workload as environment and
#: copied into the record's provenance: provenance field -> variable.
IMAGE_ENV = {
    "image_digest": "HARNESS_IMAGE_DIGEST",
    "image_id": "HARNESS_IMAGE_ID",
}


#: The digest of the user's code folder (``workload.path``, harness/contract/code.py
#: ``user_code_digest``), computed by the host and passed to each run of a build function as
#: this variable; copied into the record's ``provenance.user_code_digest``.
USER_CODE_ENV = "HARNESS_USER_CODE_DIGEST"


class SpecError(ValueError):
    """A spec that cannot be run: names the setting and what it accepts."""


#: The DDP collectives' timeout when ``run.ddp_timeout_s`` is not set (Lightning's own default
#: is 30 minutes): a rank left waiting for a dead one fails after this long.
DEFAULT_DDP_TIMEOUT_S = 180.0

#: What ``test_fault`` (test-only) can do: ``raise`` an exception, ``cuda_error`` trigger a
#: sticky device-side assert (an out-of-bounds index; on the CPU an IndexError), ``hang``
#: sleep until a signal, on rank ``rank`` as optimizer step ``step`` (0-based) starts.
FAULT_KINDS = ("raise", "cuda_error", "hang")

#: How closely a replay for ``harness diagnose`` watches its logged step: every aten operation
#: (DebugMode), or each module's outputs and gradients (hooks; torch without DebugMode).
DIAGNOSE_LEVELS = ("ops", "modules")

#: Run fields that are left out of the spec's dict while unset (None), so that the specs,
#: records and digests of matrices that do not set them stay what they were.
OPTIONAL_RUN_FIELDS = ("ddp_timeout_s", "test_fault", "count_host_syncs", "diagnose")


def _checker(table: tuple[Setting, ...]) -> Any:
    def __post_init__(self: Any) -> None:
        for setting in table:
            problem = setting.check(getattr(self, setting.name))
            if problem:
                raise SpecError(problem)
        _check_run_fields(self)

    return __post_init__


def _check_run_fields(self: Any) -> None:
    if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or self.repeat < 0:
        raise SpecError(f"repeat must be a non-negative integer, got {self.repeat!r}")
    if self.format_version != SPEC_FORMAT_VERSION:
        raise SpecError(
            f"spec format_version {self.format_version} is not {SPEC_FORMAT_VERSION}; "
            "rebuild the workload image or update harness"
        )
    timeout = self.ddp_timeout_s
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise SpecError(f"ddp_timeout_s must be a positive number of seconds, got {timeout!r}")
    if self.test_fault is not None:
        _check_fault(self.test_fault)
    if self.count_host_syncs is not None and not isinstance(self.count_host_syncs, bool):
        raise SpecError(f"count_host_syncs must be true or false, got {self.count_host_syncs!r}")
    if self.diagnose is not None:
        _check_diagnose(self.diagnose, self.devices)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_diagnose(entry: Any, devices: int) -> None:
    """diagnose: ``{steps, log_step, log_from, level, rank}`` (harness/workload/replay.py)."""
    keys = {"steps", "log_step", "log_from", "level", "rank"}
    if not isinstance(entry, dict) or set(entry) - keys:
        raise SpecError(f"diagnose must be a mapping of {', '.join(sorted(keys))}: {entry!r}")
    steps, log_step = entry.get("steps"), entry.get("log_step")
    if not _count(steps) or steps < 1:
        raise SpecError(f"diagnose.steps must be a positive integer, got {steps!r}")
    if log_step is not None and (not _count(log_step) or log_step >= steps):
        raise SpecError(f"diagnose.log_step must be null or a step below steps, got {log_step!r}")
    log_from = entry.get("log_from")
    if log_from is not None and (log_step is None or not _count(log_from) or log_from > log_step):
        raise SpecError(f"diagnose.log_from must be null or a step up to log_step: {log_from!r}")
    if entry.get("level", "ops") not in DIAGNOSE_LEVELS:
        raise SpecError(f"diagnose.level must be one of {', '.join(DIAGNOSE_LEVELS)}")
    rank = entry.get("rank", 0)
    if not _count(rank) or rank >= max(devices, 1):
        raise SpecError(f"diagnose.rank must be a rank of the run (0 to {devices - 1}): {rank!r}")


def _check_fault(fault: Any) -> None:
    """test_fault: ``{kind, rank, step}``, nothing else."""
    if not isinstance(fault, dict) or set(fault) - {"kind", "rank", "step"}:
        raise SpecError(f"test_fault must be a mapping of kind, rank and step, got {fault!r}")
    if fault.get("kind") not in FAULT_KINDS:
        raise SpecError(f"test_fault.kind must be one of {', '.join(FAULT_KINDS)}")
    for key in ("rank", "step"):
        value = fault.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SpecError(f"test_fault.{key} must be a non-negative integer, got {value!r}")


def _to_dict(self: Any) -> dict[str, Any]:
    """The spec as spec.json and the record hold it: unset optional run fields left out."""
    data = dataclasses.asdict(self)
    for name in OPTIONAL_RUN_FIELDS:
        if data.get(name) is None:
            data.pop(name, None)
    return data


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"unknown spec settings: {', '.join(unknown)}; known: {sorted(known)}")
    return cls(**data)


def _load(cls: type, path: str | Path) -> Any:
    return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _default(setting: Setting) -> Any:
    """A field's default; a mapping (``params``) gets a fresh copy per spec."""
    if isinstance(setting.default, dict):
        return dataclasses.field(default_factory=lambda: dict(setting.default))
    return dataclasses.field(default=setting.default)


def make_spec_class(table: tuple[Setting, ...] = SETTINGS) -> type:
    """The spec dataclass of a settings table: one field per setting, then the run fields.

    Built from the table so that a new setting needs no edit here; tests build it from an
    extended table to check just that.
    """
    fields: list[Any] = [(s.name, Any, _default(s)) for s in table]
    fields += [
        ("repeat", int, dataclasses.field(default=0)),
        ("cell_id", str, dataclasses.field(default="")),
        ("cell_name", str, dataclasses.field(default="")),
        ("format_version", int, dataclasses.field(default=SPEC_FORMAT_VERSION)),
        # how the run runs, not what it computes; None (unset) is left out of to_dict()
        ("ddp_timeout_s", Any, dataclasses.field(default=None)),
        ("test_fault", Any, dataclasses.field(default=None)),
        # count the host syncs of the training steps (docs/workload.md, "Host syncs per step")
        ("count_host_syncs", Any, dataclasses.field(default=None)),
        # a replay for `harness diagnose` (harness/workload/replay.py); None in every run of a
        # matrix
        ("diagnose", Any, dataclasses.field(default=None)),
    ]
    namespace = {
        "__doc__": "Everything one repeat of one cell is: written by the host as spec.json.",
        "__post_init__": _checker(table),
        "from_dict": classmethod(_from_dict),
        "load": classmethod(_load),
        "to_dict": _to_dict,
        "replace": dataclasses.replace,
    }
    return dataclasses.make_dataclass("RunSpec", fields, frozen=True, namespace=namespace)


RunSpec: Any = make_spec_class()
RunSpec.__module__ = __name__


#: Variables the run's environment owns: set from the spec, or removed where the spec leaves them
#: unset, never inherited from whoever starts the run (``environment_for``).
OWNED_ENV_VARS = ("CUBLAS_WORKSPACE_CONFIG",)


def cublas_workspace_in_force(cublas_workspace: str, deterministic_algorithms: str) -> str | None:
    """The ``CUBLAS_WORKSPACE_CONFIG`` a run has (None: unset), from its two settings.

    The one place ``auto`` is resolved: ``:4096:8`` when deterministic algorithms are ``on`` or
    ``warn``, unset when ``off``; ``unset`` is unset; any other value is set as it is. The run's
    environment and the report's cost-of-determinism twins both ask it.
    """
    if cublas_workspace == "auto":
        return None if deterministic_algorithms == "off" else CUBLAS_WORKSPACE_DETERMINISTIC
    if cublas_workspace == "unset":
        return None
    return cublas_workspace


def run_environment(spec: Any) -> dict[str, str]:
    """The variables a run starts with, whoever starts it (local process, container, re-exec).

    Thread counts pinned to the spec, its hash seed, and the cuBLAS workspace the spec asks for
    (``cublas_workspace_in_force``; it must be set before CUDA starts). A variable of
    ``OWNED_ENV_VARS`` missing here must be removed from the run's environment: use
    ``environment_for`` to build it on top of another.
    ``cpu_isa`` other than ``native`` sets the ISA limits (``isa_environment``).
    """
    threads = str(spec.threads)
    env = {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "PYTHONHASHSEED": str(spec.pythonhashseed),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # CUDA's indices are nvidia-smi's (and the slots')
    }
    workspace = cublas_workspace_in_force(spec.cublas_workspace, spec.deterministic_algorithms)
    if workspace is not None:
        env["CUBLAS_WORKSPACE_CONFIG"] = workspace
    # a ceiling of the CPU code path; `native` keeps the starter's limits (isa_passthrough)
    env.update(isa_environment(spec.cpu_isa))
    return env


def environment_for(spec: Any, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (the starter's environment) with the run's variables: those of
    ``run_environment`` set, and the ``OWNED_ENV_VARS`` it leaves unset removed, so an exported
    ``CUBLAS_WORKSPACE_CONFIG`` never reaches a run whose spec leaves it unset."""
    env = {k: v for k, v in base.items() if k not in OWNED_ENV_VARS}
    env.update(run_environment(spec))
    return env


def isa_passthrough(spec: Any, base: Mapping[str, str]) -> dict[str, str]:
    """The ISA limits of ``base`` (the host's environment) that a ``native`` run keeps where it
    does not inherit the host's environment (a container): a limit exported on the host caps
    every native run, local or in a container, as it would on a machine of that code path.
    A ceiling (``cpu_isa`` other than ``native``) sets its own instead: nothing passes."""
    if spec.cpu_isa != NATIVE:
        return {}
    return {name: base[name] for name in ISA_ENV_VARS if name in base}
