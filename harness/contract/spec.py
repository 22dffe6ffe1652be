"""``spec.json``: one repeat of one cell, the run's identity.

The spec holds the cell's settings (every entry of the settings table) and which repeat this is;
where things are (the data folder) and what the host learnt about the image (digest, id) travel
beside it, as workload arguments and environment, so a spec never changes with the machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from harness.contract.machine import ISA_ENV_VARS, NATIVE, isa_environment
from harness.contract.settings import SETTINGS, Setting
from harness.contract.spec_base import (
    DIAGNOSE_LEVELS,
    FAULT_KINDS,
    OPTIONAL_RUN_FIELDS,
    RUN_FIELDS,
    SPEC_FORMAT_VERSION,
    SpecBase,
    SpecError,
    check_spec,
)
from harness.contract.spec_fields import RunSpec

__all__ = [
    "CUBLAS_WORKSPACE_DETERMINISTIC",
    "DEFAULT_DDP_TIMEOUT_S",
    "DIAGNOSE_LEVELS",
    "FAULT_KINDS",
    "IMAGE_ENV",
    "NUMERIC_ENV_VARS",
    "OPTIONAL_RUN_FIELDS",
    "OWNED_ENV_VARS",
    "SPEC_FORMAT_VERSION",
    "USER_CODE_ENV",
    "RunSpec",
    "SpecError",
    "cublas_workspace_in_force",
    "environment_for",
    "isa_passthrough",
    "make_spec_class",
    "run_environment",
]

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


#: The DDP collectives' timeout when ``run.ddp_timeout_s`` is not set (Lightning's own default
#: is 30 minutes): a rank left waiting for a dead one fails after this long.
DEFAULT_DDP_TIMEOUT_S = 180.0


def _default(setting: Setting) -> Any:
    """A field's default; a mapping (``params``) gets a fresh copy per spec."""
    if isinstance(setting.default, dict):
        return dataclasses.field(default_factory=lambda: dict(setting.default))
    return dataclasses.field(default=setting.default)


def make_spec_class(table: tuple[Setting, ...] = SETTINGS) -> type[SpecBase]:
    """The spec dataclass of another settings table: one field per setting, then the run fields.

    ``RunSpec`` itself is generated source (spec_fields.py, for the type checker); tests build
    the class of an extended table here to check that a new setting needs no edit elsewhere.
    """
    fields: list[Any] = [(s.name, Any, _default(s)) for s in table]
    fields += [(f.name, Any, dataclasses.field(default=f.default)) for f in RUN_FIELDS]

    def __post_init__(self: Any) -> None:
        check_spec(self, table)

    namespace = {"__doc__": RunSpec.__doc__, "__post_init__": __post_init__}
    return dataclasses.make_dataclass(
        "RunSpec", fields, bases=(SpecBase,), frozen=True, namespace=namespace
    )


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


def run_environment(spec: RunSpec) -> dict[str, str]:
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


def environment_for(spec: RunSpec, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (the starter's environment) with the run's variables: those of
    ``run_environment`` set, and the ``OWNED_ENV_VARS`` it leaves unset removed, so an exported
    ``CUBLAS_WORKSPACE_CONFIG`` never reaches a run whose spec leaves it unset."""
    env = {k: v for k, v in base.items() if k not in OWNED_ENV_VARS}
    env.update(run_environment(spec))
    return env


def isa_passthrough(spec: RunSpec, base: Mapping[str, str]) -> dict[str, str]:
    """The ISA limits of ``base`` (the host's environment) that a ``native`` run keeps where it
    does not inherit the host's environment (a container): a limit exported on the host caps
    every native run, local or in a container, as it would on a machine of that code path.
    A ceiling (``cpu_isa`` other than ``native``) sets its own instead: nothing passes."""
    if spec.cpu_isa != NATIVE:
        return {}
    return {name: base[name] for name in ISA_ENV_VARS if name in base}
