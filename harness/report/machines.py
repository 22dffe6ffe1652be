"""The machines of the report's header: which ran the runs, and how many runs each.

How two machines differ, in words, is harness/contract/machine.py's (``machines_differ``): the
report, merge, compare and diagnose all ask it before they let a setting take the blame.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.contract.machine import Machine, cpu_text, fingerprint, gpu_text, limits_of

#: Why a difference between runs of different machines need not be the setting's.
MACHINE_CAVEAT = (
    "oneDNN, MKL and ATen pick their kernels by the CPU and the code path in force, so the "
    "difference need not come from the setting"
)


@dataclass
class MachineInfo:
    """One machine of the report's header: the facts a reader tells machines apart by, and how
    many runs (and of how many cells) ran on it."""

    fingerprint: str
    cpu: str
    capability: str | None
    isa_limits: dict[str, str]
    cpu_flags: list[str]
    gpus: list[str]
    runs: int
    cells: int


def machine_table(runs: Iterable[tuple[str, Machine | None]]) -> list[MachineInfo]:
    """Each machine of ``runs`` ((cell id, the run's machine) pairs), in the order first seen,
    with its count of runs and cells; runs that recorded no machine are left out."""
    table: dict[str, MachineInfo] = {}
    cells: dict[str, set[str]] = {}
    for cell, machine in runs:
        key = fingerprint(machine)
        if machine is None or key is None:
            continue
        if key not in table:
            table[key] = MachineInfo(
                fingerprint=key,
                cpu=cpu_text(machine),
                capability=machine.cpu_capability,
                isa_limits=limits_of(machine),
                cpu_flags=list(machine.cpu_flags),
                gpus=[gpu_text(g) for g in machine.gpus],
                runs=0,
                cells=0,
            )
            cells[key] = set()
        table[key].runs += 1
        cells[key].add(cell)
        table[key].cells = len(cells[key])
    return list(table.values())
