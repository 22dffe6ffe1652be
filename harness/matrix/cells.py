"""From a validated matrix to cells: expansion, full settings, stable ids and readable names.

Expansion is a pure function of the validated model, so ``plan``, ``run``, resume and the report
all see the same cells in the same order. include/exclude follow GitHub Actions'
``strategy.matrix`` (docs/matrix.md).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.contract.settings import DIGEST_SETTINGS, SETTINGS, identity
from harness.contract.spec import RunSpec
from harness.matrix.models import CellSettings, WorkloadBlock

#: The scheme of cell ids; results folders record it in their manifest.
CELL_ID_SCHEME = 2


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: full settings, a stable id and a readable, unique name."""

    id: str
    name: str
    settings: dict[str, Any]
    #: the spec's optional run fields set in ``run:`` (ddp_timeout_s, test_fault,
    #: count_host_syncs); not settings:
    #: they are in no cell id or name
    run_fields: dict[str, Any] = field(default_factory=dict)
    #: a control cell (``control: true``): its image's cell that must not reproduce
    control: bool = False

    def spec(self, repeat: int) -> RunSpec:
        return RunSpec(
            **self.settings,
            **self.run_fields,
            repeat=repeat,
            cell_id=self.id,
            cell_name=self.name,
        )


@dataclass(frozen=True)
class LoadedMatrix:
    path: Path
    text: str
    model: Any
    cells: list[Cell]
    #: ``workload.path`` as an absolute folder (None: no ``workload.path``): where the user's
    #: code is, for the executors (``--code-dir``, the container's read-only mount)
    code_dir: Path | None = None

    @property
    def text_sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def digest(self) -> str:
        """Identity of what the matrix runs; timeout_s, max_runs and memory_limit may change on
        resume (raising a limit after a timeout or an OOM kill must not orphan the results)."""
        data = self.model.model_dump(mode="json")
        data["run"].pop("timeout_s")
        data["run"].pop("max_runs")
        data["run"].pop("memory_limit")
        # a limit like timeout_s: changing it keeps the folder (the specs of DDP cells that
        # carry it change, so their finished runs are set aside and rerun)
        data["run"].pop("ddp_timeout_s")
        if data["run"].get("test_fault") is None:  # unset: the digest of before it existed
            data["run"].pop("test_fault")
        # what a run records, not what it computes (its specs change: finished runs are rerun)
        data["run"].pop("count_host_syncs")
        # where the user's code lies, not what it is: each run records the digest of the code
        # (provenance.user_code_digest), and resume reruns the runs whose code changed; the
        # requirements are in the image (its id is compared) or the local environment as it is
        data["workload"].pop("path")
        data["workload"].pop("requirements")
        if data["workload"] == _UNSET_WORKLOAD:
            del data["workload"]  # unset: the digest of before it existed
        # where and how harness submit slurm queues the runs, not what they run
        data.pop("slurm")
        if not data["control"]:  # unset: the digest of before it existed
            data.pop("control")
        _drop_unused_later_settings(data)
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()

    @property
    def total_runs(self) -> int:
        repeats: int = self.model.run.repeats
        return len(self.cells) * repeats


_UNSET_WORKLOAD = {
    k: v
    for k, v in WorkloadBlock().model_dump(mode="json").items()
    if k not in ("path", "requirements")
}


def _drop_unused_later_settings(data: dict[str, Any]) -> None:
    """Remove from a matrix dump the settings added after ``DIGEST_SETTINGS`` that it does not
    use: null in axes, include and exclude entries, their default in ``run:``."""
    later = [s for s in SETTINGS if s.name not in DIGEST_SETTINGS]
    for s in later:
        if data["axes"].get(s.name, 0) is None:
            del data["axes"][s.name]
        for entry in (*data["include"], *data["exclude"]):
            if entry.get(s.name, 0) is None:
                del entry[s.name]
        if s.run_default and data["run"].get(s.name) == s.default:
            del data["run"][s.name]


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def cell_id(settings: Mapping[str, Any]) -> str:
    """First 12 hex of sha256 over the canonical JSON of the cell's identity: its image and the
    settings that differ from their defaults (docs/matrix.md, "Cell ids and names")."""
    normalized = CellSettings.model_validate(dict(settings)).model_dump(mode="json")
    return id_of_identity(identity(normalized))


def id_of_identity(ident: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(ident)).encode()).hexdigest()[:12]


def expand(model: Any) -> list[dict[str, Any]]:
    """The combinations, in stable order, before defaults: GitHub Actions semantics.

    1. the cartesian product of the axes, in the settings table's order (not the file's); 2. drop
    combinations matching an exclude entry (all its keys equal); 3. each include entry extends
    every original combination whose axis values it does not contradict (adding or overwriting
    only non-axis keys); if it extends none, it is added as a new combination.
    """
    axes = {k: v for k, v in model.axes.model_dump(exclude_unset=True).items() if v is not None}
    names = list(axes)
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]
    if not axes:
        combos = []
    excludes = [e.model_dump(exclude_unset=True) for e in model.exclude]
    combos = [c for c in combos if not any(_matches(c, e) for e in excludes)]
    originals = len(combos)
    for entry in (i.model_dump(exclude_unset=True) for i in model.include):
        matched = False
        for combo in combos[:originals]:
            if all(same(combo[k], v) for k, v in entry.items() if k in axes):
                combo.update({k: v for k, v in entry.items() if k not in axes})
                matched = True
        if not matched:
            combos.append(dict(entry))
    return combos


def same(a: Any, b: Any) -> bool:
    """Equal values of a setting, types kept: Python's ``1 == True == 1.0`` would make
    ``params: {x: 1}`` match ``{x: true}``; their canonical JSON does not."""
    return canonical_json(a) == canonical_json(b)


def _matches(combo: dict[str, Any], pattern: dict[str, Any]) -> bool:
    return all(k in combo and same(combo[k], v) for k, v in pattern.items())


def full_settings(model: Any, combo: dict[str, Any]) -> dict[str, Any]:
    """Every setting of a cell: the combination, over ``run:``'s defaults, over the table's."""
    run = model.run.model_dump()
    base = {s.name: run[s.name] for s in SETTINGS if s.run_default}
    base["entry"] = model.workload.entry
    # a cell's params: workload.params, with those its axis or include entry names overridden
    params = {**model.workload.params, **(combo.get("params") or {})}
    cell = CellSettings.model_validate({**base, **combo, "params": params})
    settings: dict[str, Any] = cell.model_dump(mode="json")
    return settings


def run_fields(model: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The optional spec fields ``run:`` sets for a cell: ``test_fault`` for every cell,
    ``ddp_timeout_s`` for the cells that use DDP (devices > 1), so that changing it sets aside
    no other cell's runs; ``count_host_syncs`` for every cell when true. Unset: nothing, and
    the spec is what it was before they existed."""
    fields: dict[str, Any] = {}
    if model.run.test_fault is not None:
        fields["test_fault"] = model.run.test_fault.model_dump(mode="json")
    if model.run.count_host_syncs:
        fields["count_host_syncs"] = True
    if model.run.ddp_timeout_s is not None and settings["devices"] > 1:
        fields["ddp_timeout_s"] = model.run.ddp_timeout_s
    return fields


def make_cells(model: Any, combos: list[dict[str, Any]]) -> list[Cell]:
    settings = [full_settings(model, c) for c in combos]
    names = readable_names(settings)
    return [
        Cell(cell_id(s), n, s, run_fields(model, s)) for s, n in zip(settings, names, strict=True)
    ]


#: The placement of a control cell: the seed is set nowhere, so its repeats must differ.
CONTROL_PLACEMENT = "none"


def with_controls(model: Any, cells: list[Cell]) -> list[Cell]:
    """``cells`` with a control cell per image (first-seen order) when ``control`` is set.

    An image's control is its first cell with ``placement: none``: a cell that must not
    reproduce, so a reproducing one shows the harness cannot see a difference there. A cell
    with exactly those settings already in the matrix is marked; otherwise a new cell is
    added at the end, named like any other (the existing cells' names do not change)."""
    if not model.control:
        return cells
    index = {c.id: i for i, c in enumerate(cells)}
    firsts: dict[str, Cell] = {}
    for c in cells:
        firsts.setdefault(c.settings["image"], c)
    marked = list(cells)
    added: list[dict[str, Any]] = []
    for first in firsts.values():
        settings = {**first.settings, "placement": CONTROL_PLACEMENT}
        found = index.get(cell_id(settings))
        if found is not None:
            marked[found] = replace(marked[found], control=True)
        else:
            added.append(settings)
    taken = {c.name for c in cells}
    names = readable_names([c.settings for c in cells] + added)[len(cells) :]
    names = [
        n if n not in taken else f"{n}-{cell_id(s)[:6]}" for n, s in zip(names, added, strict=True)
    ]
    return marked + [
        Cell(cell_id(s), n, s, run_fields(model, s), control=True)
        for s, n in zip(added, names, strict=True)
    ]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.") or "x"


def _name_value(kind: str, value: Any) -> str:
    if kind == "image":
        return _slug(str(value).rsplit("/", 1)[-1].replace(":", "-"))
    if isinstance(value, bool):
        return str(int(value))
    return _slug(str(value))


def _varying_keys(all_settings: list[dict[str, Any]], name: str) -> list[str]:
    """The keys of a mapping setting (``params``) whose value differs between cells, sorted
    (a key a cell lacks counts as a value of its own)."""
    keys = sorted({k for x in all_settings for k in x[name]})
    return [
        k
        for k in keys
        if len({canonical_json([k in x[name], x[name].get(k)]) for x in all_settings}) > 1
    ]


def readable_names(all_settings: list[dict[str, Any]]) -> list[str]:
    """``<image>-<acc><devices>-<placement>-det<0|1>-bench<0|1>-alg<x>`` + varying extras.

    The settings with a ``name_slot`` are always named (one slot's settings joined without a
    dash); the others are named, as ``<label><value>``, where they vary in the matrix; of
    ``params``, each key that varies, as ``<key><value>`` (``ch8``, not the whole mapping). A
    cell with an ``entry`` is not named by a built-in-only setting (``h64``): it never reads it.
    """
    varying = [
        s
        for s in SETTINGS
        if s.name_slot is None and len({canonical_json(x[s.name]) for x in all_settings}) > 1
    ]
    slots = sorted({s.name_slot for s in SETTINGS if s.name_slot is not None})
    names = []
    for values in all_settings:
        parts = [
            "".join(
                s.label + _name_value(s.kind, values[s.name])
                for s in SETTINGS
                if s.name_slot == slot
            )
            for slot in slots
        ]
        for s in varying:
            if s.builtin_only and values.get("entry") is not None:
                continue  # the user's build function never reads it
            if s.kind == "params":  # only the keys that vary, each as <key><value>: ch8
                parts += [
                    _slug(key) + _name_value("str", values[s.name].get(key))
                    for key in _varying_keys(all_settings, s.name)
                ]
            else:
                parts.append(s.label + _name_value(s.kind, values[s.name]))
        names.append("-".join(parts))
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return [
        n if counts[n] == 1 else f"{n}-{cell_id(s)[:6]}"
        for n, s in zip(names, all_settings, strict=True)
    ]
