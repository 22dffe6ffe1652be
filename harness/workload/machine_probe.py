"""Read ``provenance.machine`` in the run's own process (inside its container, if any).

Read, not assumed: the CPU is the one ``/proc/cpuinfo`` shows this process, the code path the
one torch reports with the run's ISA limits in force, and the libraries' versions those torch
was built with. Never raises: a fact that cannot be read is null, with the reason.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from harness.contract.machine import (
    ISA_ENV_VARS,
    Machine,
    gpu_identity,
    machine_fingerprint,
    parse_cpuinfo,
)

CPUINFO = Path("/proc/cpuinfo")

#: The lines of ``torch.__config__.show()`` that name the CPU libraries' versions.
_ONEDNN = re.compile(r"(?:MKL-DNN|oneDNN) v(\S+)")
_MKL = re.compile(r"Math Kernel Library Version (\d[\w.]*\d)")


def _cpu(cpuinfo: Path) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        facts = parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        why = f"{cpuinfo} could not be read ({exc.strerror or exc})"
        keys = ("cpu_vendor", "cpu_name", "cpu_family", "cpu_model", "cpu_stepping", "cpu_flags")
        return {}, {f"machine.{k}": why for k in keys}
    reasons = {
        f"machine.{k}": f"{cpuinfo} does not say it" for k, v in facts.items() if v in (None, [])
    }
    return facts, reasons


def _capability() -> tuple[str | None, str | None]:
    try:
        return str(torch.backends.cpu.get_cpu_capability()), None
    except Exception as exc:  # noqa: BLE001 - provenance never fails a run
        return None, f"torch.backends.cpu.get_cpu_capability() failed: {exc}"


def _libc() -> tuple[str | None, str | None]:
    try:
        name, version = platform.libc_ver()
    except OSError as exc:
        return None, f"platform.libc_ver() failed: {exc}"
    if not name:
        return None, "platform.libc_ver() does not know this C library"
    return f"{name} {version}", None


def build_config() -> str:
    try:
        return str(torch.__config__.show())
    except Exception:  # noqa: BLE001
        return ""


def read_machine(
    gpus: Iterable[Mapping[str, Any]],
    no_gpus: str | None = None,
    *,
    cpuinfo: Path = CPUINFO,
    environ: Mapping[str, str] | None = None,
    config: str | None = None,
) -> tuple[Machine, dict[str, str]]:
    """This process's machine and the reasons for its null fields (``machine.<field>``);
    ``gpus`` are the run's entries of ``provenance.gpus`` (the fingerprint holds them),
    ``no_gpus`` why there are none."""
    env = os.environ if environ is None else environ
    facts, unavailable = _cpu(cpuinfo)
    capability, why = _capability()
    if why:
        unavailable["machine.cpu_capability"] = why
    text = build_config() if config is None else config
    versions: dict[str, str | None] = {}
    for key, pattern in (("onednn", _ONEDNN), ("mkl", _MKL)):
        found = pattern.search(text)
        versions[key] = found.group(1) if found else None
        if not found:
            unavailable[f"machine.{key}"] = f"this torch ({torch.__version__}) is built without it"
    libc, why = _libc()
    if why:
        unavailable["machine.libc"] = why
    machine = Machine(
        **facts,
        cpu_capability=capability,
        isa_limits={name: env.get(name) for name in ISA_ENV_VARS},
        kernel=platform.release() or None,
        libc=libc,
        gpus=gpu_identity(gpus),
        onednn=versions["onednn"],
        mkl=versions["mkl"],
    )
    if not machine.gpus:
        unavailable["machine.gpus"] = no_gpus or "no GPU visible to this run"
    if machine.kernel is None:
        unavailable["machine.kernel"] = "platform.release() is empty"
    machine.fingerprint = machine_fingerprint(machine)
    return machine, unavailable
