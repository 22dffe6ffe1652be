"""The machine a run ran on: what decides which CPU and GPU kernels compute its bits.

Two machines of one kind can give different loss bits for the same code: oneDNN, MKL and ATen
dispatch to AVX2, AVX-512 or AMX kernels by what the CPU offers, and cuBLAS picks kernels by GPU
architecture and SM count. Every run record carries ``provenance.machine`` and a short
fingerprint of the facts that decide those kernels, so that every comparison across cells,
shards, folders or baselines can check it before it blames a setting (docs/results.md,
"Machines").

The ``cpu_isa`` setting caps the CPU code path (``ISA_CEILINGS``) through the variables oneDNN,
MKL and ATen read when they start; ``native`` leaves whatever the starter's environment has.

Standard library only: the workload reads the machine inside the container; the host compares
machines here (``machines_differ``: how they differ, in words) before it blames a setting.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The variables that cap the CPU code path, in the order they are recorded: ATen's kernel
#: dispatch, oneDNN's JIT, MKL's dispatch, and MKL's conditional numerical reproducibility
#: branch (which code path MKL's results must be those of).
ISA_ENV_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")

#: ``cpu_isa`` -> the value of each ``ISA_ENV_VARS`` it sets before torch is imported. ``native``
#: sets nothing: a limit the starter exported stays in force, and is recorded as such.
#: ``avx512`` is AVX-512 without its VNNI, BF16, FP16 and AMX extensions in oneDNN.
ISA_CEILINGS: Mapping[str, Mapping[str, str]] = {
    "avx512": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
        "MKL_CBWR": "AVX512",
    },
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "MKL_CBWR": "AVX2",
    },
    "sse4_2": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "MKL_CBWR": "SSE4_2",
    },
}
NATIVE = "native"
CPU_ISA_CHOICES = (NATIVE, *ISA_CEILINGS)

#: The CPU flags (``/proc/cpuinfo``) that change which kernels run: the vector extensions x86
#: libraries dispatch on, and arm64's. Only these are recorded and fingerprinted: the others
#: (virtualisation, mitigations) differ between hosts without changing a bit.
KERNEL_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512cd",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)

#: The fingerprint's length in hex digits: short enough for a table, long enough never to
#: collide among the machines of one fleet.
FINGERPRINT_LENGTH = 12


@dataclass
class Machine:
    """``provenance.machine``: the CPU (read from ``/proc/cpuinfo`` inside the run's process, or
    container), the code path torch and its libraries take on it, the operating system, and
    ``fingerprint``. Each field is null only with a reason in ``provenance.unavailable`` (key
    ``machine.<field>``)."""

    __pydantic_config__ = {"extra": "forbid"}

    #: ``vendor_id`` (x86) or ``CPU implementer`` (arm64)
    cpu_vendor: str | None = None
    #: ``model name``: often a generic name in a VM ("Intel(R) Xeon(R) Processor")
    cpu_name: str | None = None
    cpu_family: int | None = None
    cpu_model: int | None = None
    cpu_stepping: int | None = None
    #: the ``KERNEL_FLAGS`` the CPU has, in that order
    cpu_flags: list[str] = field(default_factory=list)
    #: ``torch.backends.cpu.get_cpu_capability()`` in force (``AVX512``, ``AVX2``, ``DEFAULT``)
    cpu_capability: str | None = None
    #: each of ``ISA_ENV_VARS`` as the run's process had it (None: unset)
    isa_limits: dict[str, str | None] = field(default_factory=dict)
    #: the oneDNN and MKL versions torch was built with (``torch.__config__.show()``)
    onednn: str | None = None
    mkl: str | None = None
    #: ``platform.release()``: the host's kernel, also inside a container
    kernel: str | None = None
    #: the C library of the run's process (in a container: the image's)
    libc: str | None = None
    #: ``[name, compute capability, SM count]`` of each GPU the run saw (``gpu_identity``)
    gpus: list[list[str | int | None]] = field(default_factory=list)
    #: ``machine_fingerprint`` of the above
    fingerprint: str | None = None


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The first processor's facts from ``/proc/cpuinfo`` text: vendor, name, family, model,
    stepping (ints; an arm64 ``CPU variant``/``CPU part`` in hex is read as such) and the
    ``KERNEL_FLAGS`` among its ``flags`` (x86) or ``Features`` (arm64). What is not there is
    None (flags: empty)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough: they are alike
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())

    def number(*keys: str) -> int | None:
        for key in keys:
            value = fields.get(key)
            if value is None:
                continue
            try:
                return int(value, 0)  # "6", "0x41", "0xd0c"
            except ValueError:
                return None
        return None

    have = set((fields.get("flags") or fields.get("features") or "").split())
    return {
        "cpu_vendor": fields.get("vendor_id") or fields.get("cpu implementer"),
        "cpu_name": fields.get("model name"),
        "cpu_family": number("cpu family", "cpu architecture"),
        "cpu_model": number("model", "cpu part"),
        "cpu_stepping": number("stepping", "cpu variant"),
        "cpu_flags": [flag for flag in KERNEL_FLAGS if flag in have],
    }


def gpu_identity(gpus: Iterable[Mapping[str, Any]]) -> list[list[str | int | None]]:
    """What of each visible GPU decides its kernels: name, compute capability, SM count."""
    return [[g.get("name"), g.get("capability"), g.get("sm_count")] for g in gpus]


def machine_fingerprint(machine: Machine) -> str:
    """A short digest of what decides the run's kernels: the CPU's vendor, family and model,
    its kernel flags, the capability and ISA limits in force, and the GPUs it saw.

    Left out on purpose: the CPU's name (a VM may call any CPU "Intel(R) Xeon(R) Processor")
    and stepping (revisions of one design), and the software (oneDNN, MKL, kernel, C library),
    which the image pins: a change of image is the image's effect, not the machine's."""
    facts = {
        "cpu": [machine.cpu_vendor, machine.cpu_family, machine.cpu_model],
        "flags": list(machine.cpu_flags),
        "capability": machine.cpu_capability,
        "limits": {k: v for k, v in sorted(machine.isa_limits.items()) if v is not None},
        "gpus": [list(g) for g in machine.gpus],
    }
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_LENGTH]


def isa_environment(cpu_isa: str) -> dict[str, str]:
    """The variables ``cpu_isa`` sets before torch is imported (none for ``native``)."""
    return dict(ISA_CEILINGS.get(cpu_isa, {}))


# ---------------------------------------------------------------- comparing machines

#: The facts a comparison may leave out: those a setting that varies sets itself (``cpu_isa``
#: sets the capability and the limits).
CODE_PATH = frozenset({"capability", "limits"})


#: A fingerprint as the workload writes it; anything else in a record is not trusted as one.
_FINGERPRINT = re.compile(f"[0-9a-f]{{{FINGERPRINT_LENGTH}}}")


def fingerprint(machine: Machine | None) -> str | None:
    """The machine's fingerprint; None when there is none, or it is not one (a record that
    was edited by hand): such a run counts as one whose machine is not recorded."""
    value = machine.fingerprint if machine is not None else None
    return value if isinstance(value, str) and _FINGERPRINT.fullmatch(value) else None


def cpu_text(machine: Machine) -> str:
    """``Intel(R) Xeon(R) Processor (GenuineIntel, family 6, model 143)``."""
    ident = ", ".join(
        part
        for part in (
            machine.cpu_vendor,
            f"family {machine.cpu_family}" if machine.cpu_family is not None else None,
            f"model {machine.cpu_model}" if machine.cpu_model is not None else None,
        )
        if part
    )
    name = machine.cpu_name or "unnamed CPU"
    return f"{name} ({ident})" if ident else name


def set_limits(limits: Mapping[str, str | None]) -> dict[str, str]:
    """The ISA limits that are set, in ``ISA_ENV_VARS`` order."""
    return {k: v for k in ISA_ENV_VARS if (v := limits.get(k)) is not None}


def limits_of(machine: Machine) -> dict[str, str]:
    """The ISA limits in force on ``machine`` (set ones only)."""
    return set_limits(machine.isa_limits)


def limits_text(limits: Mapping[str, str | None]) -> str:
    """ISA limits (those set) as ``ATEN_CPU_CAPABILITY=avx2, MKL_CBWR=AVX2``; ``none``."""
    return ", ".join(f"{k}={v}" for k, v in set_limits(limits).items()) or "none"


def gpu_text(gpu: Sequence[Any]) -> str:
    """One GPU of ``Machine.gpus`` (name, compute capability, SM count) in words."""
    name, capability, sms = (list(gpu) + [None, None, None])[:3]
    details = [f"sm_{str(capability).replace('.', '')}" if capability else None]
    details.append(f"{sms} SMs" if sms is not None else None)
    shown = ", ".join(d for d in details if d)
    return f"{name or 'unnamed GPU'}" + (f" ({shown})" if shown else "")


def differences(
    a: Machine, b: Machine, *, with_gpus: bool = True, ignore: Iterable[str] = ()
) -> list[str]:
    """How machine ``b`` differs from ``a``, in words, most telling first: the CPU capability in
    force, the ISA limits, the CPU itself, its flags, and ``with_gpus`` the GPUs. ``ignore``
    leaves out ``capability`` and ``limits``."""
    skip = set(ignore)
    out = []
    if "capability" not in skip and a.cpu_capability != b.cpu_capability:
        capabilities = (a.cpu_capability or "unknown", b.cpu_capability or "unknown")
        out.append("CPU capability {} vs {}".format(*capabilities))
    if "limits" not in skip and limits_of(a) != limits_of(b):
        out.append(f"ISA limits {limits_text(a.isa_limits)} vs {limits_text(b.isa_limits)}")
    ident_a = (a.cpu_vendor, a.cpu_family, a.cpu_model)
    if ident_a != (b.cpu_vendor, b.cpu_family, b.cpu_model):
        out.append(f"CPU {cpu_text(a)} vs {cpu_text(b)}")
    only_a = [f for f in a.cpu_flags if f not in b.cpu_flags]
    only_b = [f for f in b.cpu_flags if f not in a.cpu_flags]
    if only_a or only_b:
        sides = [
            f"{', '.join(flags)} only on the {which}"
            for flags, which in ((only_a, "first"), (only_b, "second"))
            if flags
        ]
        out.append(f"CPU flags {'; '.join(sides)}")
    if with_gpus and [list(g) for g in a.gpus] != [list(g) for g in b.gpus]:
        gpus = [", ".join(gpu_text(g) for g in m.gpus) or "none" for m in (a, b)]
        out.append("GPUs {} vs {}".format(*gpus))
    return out


def machines_differ(
    machines: Iterable[Machine | None], *, with_gpus: bool = False, ignore: Iterable[str] = ()
) -> str | None:
    """``ran on different machines (CPU capability AVX512 vs AVX2)`` when the runs' machines
    (those recorded) are more than one, in the facts not ignored; None otherwise. GPUs are
    named only ``with_gpus``: the report says a GPU difference in its own note, with what
    cuBLAS promises."""
    kinds: dict[str, Machine] = {}
    for machine in machines:
        key = fingerprint(machine)
        if key is not None and machine is not None:
            kinds.setdefault(key, machine)
    if len(kinds) < 2:
        return None
    base, *others = kinds.values()
    words: dict[str, None] = {}
    for other in others:
        found = differences(base, other, with_gpus=with_gpus, ignore=ignore)
        if not found and not set(ignore) and not differences(base, other, with_gpus=True):
            # they differ in nothing a reader can be told (a fact only the fingerprint holds)
            found = [f"machine {base.fingerprint} vs {other.fingerprint}"]
        words.update(dict.fromkeys(found))
    if not words:
        return None
    return f"ran on different machines ({'; '.join(words)})"
