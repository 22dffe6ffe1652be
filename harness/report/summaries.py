"""What the report says across cells: a summary per image, the same settings across images and
GPU counts, the cost of determinism, the failed runs, the merge conflicts, and the images that
ran.

Only cells with a verdict (reproduces or diverges) enter the per-image summary's counts and the
sentence that says which axis breaks reproducibility: a cell whose runs failed, are missing,
corrupt, empty or not finite is *unknown*, and is only counted apart."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from harness.contract.machine import CODE_PATH, machines_differ
from harness.contract.settings import BUILTIN_ONLY, BY_NAME, NAMES, REPORT_SETTINGS, TWIN
from harness.contract.spec import cublas_workspace_in_force
from harness.report.machines import MachineInfo, machine_table
from harness.report.report_data import (
    MISSING,
    OK,
    REPRODUCES,
    UNKNOWN,
    CellReport,
    Comparison,
    ConflictCopy,
    Cost,
    Divergence,
    Failure,
    ImageInfo,
    RunResult,
)
from harness.report.trajectories import divergences_from
from harness.results.run_reader import RecordError

#: The summary sentence names the cells that reproduce up to this many.
NAMED_CELLS = 3


#: A key of the build function's ``params`` as the report keeps it: ``params.<key>``, a
#: setting of its own (a column in report.json and the CSV; ``<key>`` in the Markdown).
PARAM_PREFIX = "params."


def fmt_setting(key: str, value: Any) -> str:
    """``key=value``, strings bare and everything else as JSON (``seed=7``, ``x=true``)."""
    return f"{label(key)}={json.dumps(value) if not isinstance(value, str) else value}"


#: What a reader already takes for a setting: the settings' names, their short labels (``t``,
#: ``lr``) and the grid's name axis. A key of ``params`` so named keeps its ``params.`` prefix,
#: or a grid would read ``placement · placement`` and a sentence name the wrong one.
TAKEN_NAMES = frozenset(NAMES) | {s.label for s in BY_NAME.values() if s.label} | {"name"}


def label(key: str) -> str:
    """How the report names a setting to people: its name, ``<key>`` for ``params.<key>``
    (``params.<key>`` where ``<key>`` is taken: ``TAKEN_NAMES``)."""
    bare = key.removeprefix(PARAM_PREFIX)
    return key if bare != key and bare in TAKEN_NAMES else bare


def report_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A cell's settings as the report shows them: each key of ``params`` a setting of its own
    (``params.<key>``, sorted), ``entry`` only where it names a build function; so a matrix
    without them reports exactly as before they existed."""
    out = {k: v for k, v in settings.items() if k != "params"}
    if out.get("entry", 0) is None:
        del out["entry"]
    params = settings.get("params")
    if isinstance(params, dict):
        out.update({f"{PARAM_PREFIX}{k}": params[k] for k in sorted(params, key=str)})
    return out


def setting_keys(cells: Iterable[CellReport]) -> list[str]:
    """The settings of these cells in table order, ``params`` replaced by the ``params.<key>``
    that any of them has (sorted)."""
    found = sorted({k for c in cells for k in c.settings if k.startswith(PARAM_PREFIX)})
    out: list[str] = []
    for name in NAMES:
        out += found if name == "params" else [name]
    return out


def report_keys(cells: Iterable[CellReport]) -> list[str]:
    """The report's setting columns for these cells: the table's report settings, ``entry``
    only where a cell runs a build function, and each ``params.<key>``; the built-in-only ones
    (``model``) not where every cell runs a build function."""
    cells = list(cells)
    has_entry = any(c.settings.get("entry") is not None for c in cells)
    # every cell runs a build function: the built-in experiment's settings describe none of them
    own = bool(cells) and all(c.settings.get("entry") is not None for c in cells)
    return [
        k
        for k in setting_keys(cells)
        if (
            k in REPORT_SETTINGS
            and k not in ("entry", "params")
            and not (own and k in BUILTIN_ONLY)
        )
        or (k == "entry" and has_entry)
        or k.startswith(PARAM_PREFIX)
    ]


def varying(cells: Iterable[CellReport]) -> list[str]:
    """The settings (table order, the image left out) whose value differs between cells."""
    cells = list(cells)
    return [
        k
        for k in setting_keys(cells)
        if k != "image" and len({json.dumps(c.settings.get(k)) for c in cells}) > 1
    ]


def describe_image(image: str, cells: list[CellReport]) -> str:
    """A sentence or two: which settings reproduce, and which axis breaks reproducibility."""
    judged = [c for c in cells if c.verdict != UNKNOWN]
    unknown = [c for c in cells if c.verdict == UNKNOWN]
    moving = varying(cells)
    parts = [_headline(image, judged, moving)]
    parts += [_breaks(axis, judged) for axis in moving]
    only_weights = [c for c in judged if c.distinct_trajectories == 1 and c.final_equal is False]
    if only_weights:
        parts.append(
            f"{len(only_weights)} cell(s) have identical losses but different final weights."
        )
    if unknown:
        parts.append(
            f"{len(unknown)} cell(s) have no verdict (see Cells without a verdict): not counted "
            "above."
        )
    return " ".join(p for p in parts if p)


def _headline(image: str, judged: list[CellReport], varying: list[str]) -> str:
    """How many cells reproduce on ``image``, naming them (by their varying settings)."""
    good = [c for c in judged if c.verdict == REPRODUCES]
    if not judged:
        return f"On {image}, no cell has a verdict."
    if len(good) == len(judged):
        return f"On {image}, all {len(judged)} cells reproduce bit for bit."
    if not good:
        return f"On {image}, none of the {len(judged)} cells reproduces bit for bit."
    keys = varying or ["placement"]
    if len(good) > NAMED_CELLS:  # a list past a few cells reads worse than the grid
        names = "the grid shows which"
    else:
        names = "; ".join(", ".join(fmt_setting(k, c.settings.get(k)) for k in keys) for c in good)
    return (
        f"On {image}, {len(good)} of {len(judged)} cells reproduce bit for bit "
        f"({names}); the other {len(judged) - len(good)} do not."
    )


def _breaks(axis: str, judged: list[CellReport]) -> str:
    """A sentence when some values of ``axis`` never reproduce while others always do."""
    by_value: dict[str, list[CellReport]] = defaultdict(list)
    for c in judged:
        by_value[json.dumps(c.settings.get(axis))].append(c)
    never = [v for v, cs in by_value.items() if not any(c.verdict == REPRODUCES for c in cs)]
    always = [v for v, cs in by_value.items() if all(c.verdict == REPRODUCES for c in cs)]
    if not (never and always):
        return ""
    bad = " and ".join(fmt_setting(axis, json.loads(v)) for v in never)
    ok = " and ".join(fmt_setting(axis, json.loads(v)) for v in always)
    verb = "never reproduces" if len(never) == 1 else "never reproduce"
    return f"{label(axis)} breaks it: {bad} {verb}, while {ok} always does."


def compare_across(axis: str, cells: list[CellReport]) -> list[Comparison]:
    """Cells that differ only in ``axis``: are their first ok repeats' trajectories equal?"""
    groups: dict[str, list[CellReport]] = defaultdict(list)
    for c in cells:
        others = {k: v for k, v in c.settings.items() if k != axis}
        groups[json.dumps(others, sort_keys=True)].append(c)
    out = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        refs = [next((r for r in c.runs if r.status == OK), None) for c in members]
        equal, div = first_runs_equal(refs)
        values = [(str(c.settings.get(axis)), c.name) for c in members]
        ran = [r for r in refs if r is not None]
        # the machine's part a setting sets itself (cpu_isa: the code path) is no machine change
        ignore = CODE_PATH if axis == "cpu_isa" else ()
        machines = machines_differ((r.machine for r in ran), ignore=ignore)
        out.append(
            Comparison(
                axis=axis,
                settings=json.loads(key),
                cells=values,
                equal=equal,
                divergence=div,
                gpus_differ=gpus_differ(ran),
                machines_differ=machines,
            )
        )
    return out


#: Why the report says when compared runs ran on different GPUs.
CUBLAS_PROMISE = "cuBLAS promises equal bits only on the same architecture and SM count"


def gpus_differ(runs: list[RunResult]) -> str | None:
    """Which GPUs the runs ran on, when they are of more than one model or SM count (an SM
    count a record does not have is not counted as a difference); None otherwise."""
    kinds = list(dict.fromkeys(kind for r in runs for kind in r.gpus))
    names = {name for name, _ in kinds}
    sm_counts = {sms for _, sms in kinds if sms is not None}
    if len(names) < 2 and len(sm_counts) < 2:
        return None
    listed = ", ".join(
        f"{name or 'unnamed GPU'} ({f'{sms} SMs' if sms is not None else 'SM count not recorded'})"
        for name, sms in kinds
    )
    return f"ran on different GPUs: {listed}"


def first_runs_equal(refs: list[RunResult | None]) -> tuple[bool | None, Divergence | None]:
    """(equal, where the first differing run diverges); (None, None) when a cell has no ok run."""
    if not all(refs):
        return None, None
    runs = [r for r in refs if r is not None]
    base = runs[0]
    differing = next((r for r in runs[1:] if r.trajectory != base.trajectory), None)
    if differing is None:
        return True, None
    try:
        found = divergences_from(base, [differing])  # the losses the report read, once
    except RecordError:  # a run made by hand, its file gone: the digests still differ
        found = []
    return False, found[0] if found else None


def effective(settings: dict[str, Any]) -> dict[str, Any]:
    """A cell's settings with ``cublas_workspace`` as the value in force: ``auto`` resolved
    (``cublas_workspace_in_force``), and an unset workspace written ``unset``. A cell of an
    older results folder, without the setting (missing, or null when read from its specs), had
    ``auto``."""

    def given(name: str) -> Any:
        value = settings.get(name)
        return BY_NAME[name].default if value is None else value

    workspace = cublas_workspace_in_force(
        given("cublas_workspace"), given("deterministic_algorithms")
    )
    return {**settings, "cublas_workspace": "unset" if workspace is None else workspace}


def costs(cells: list[CellReport]) -> list[Cost]:
    """Each cell against its nondeterministic twin (its settings with TWIN's), where it ran.

    Twins are matched by effective settings (``effective``): the twin's cuBLAS workspace is
    unset (TWIN's ``cublas_workspace: unset``), whether its cell says ``unset`` or says ``auto``
    with deterministic algorithms off. So a default matrix (every cell ``auto``) pairs
    ``alg=on`` (``:4096:8`` in force) with ``alg=off`` (unset) as it always did, and a matrix that
    names the workspace (``unset``, ``:4096:8``) pairs its cells the same way. A cell whose
    effective settings are the twin's is no cell to cost; where two cells have the same
    effective settings (``auto`` and ``unset`` beside ``alg=off``), the first is the twin.
    """
    resolved = [(c, effective(c.settings)) for c in cells]
    index: dict[str, CellReport] = {}
    for c, mine in resolved:
        index.setdefault(json.dumps(mine, sort_keys=True), c)
    out = []
    for c, mine in resolved:
        if all(mine.get(k) == v for k, v in TWIN.items()):
            continue
        twin = index.get(json.dumps(effective({**mine, **TWIN}), sort_keys=True))
        if twin is not None:
            out.append(
                Cost(
                    cell=c.name,
                    twin=twin.name,
                    seconds_per_epoch=c.seconds_per_epoch,
                    twin_seconds_per_epoch=twin.seconds_per_epoch,
                )
            )
    return out


def workspace_in_force(cell: CellReport) -> list[str]:
    """The ``CUBLAS_WORKSPACE_CONFIG`` values its ok runs recorded in force (``unset`` for
    none), each once, in run order; empty when no ok run recorded it."""
    seen: dict[str, None] = {}
    for r in cell.runs:
        if r.status == OK and r.determinism is not None:
            value = r.determinism.get("cublas_workspace_config")
            seen[str(value) if value is not None else "unset"] = None
    return list(seen)


def failures(cells: Iterable[CellReport]) -> list[Failure]:
    """Every run that is not ok (failed, missing or corrupt), with its folder, error and log
    tail; and every merge conflict copy whose record says ok but that is not."""
    out = []
    for c in cells:
        copies = [r for r in c.conflict_copies if r.recorded == "ok" and r.status != OK]
        for r in [*c.runs, *copies]:
            if r.status == OK:
                continue
            error = r.error
            message = (error.message if error else "") or r.problem or ""
            kind = (error.type if error else "") or r.status.value
            tail = (error.log_tail if error else "") or ""
            out.append(
                Failure(
                    cell=c.name,
                    repeat=r.repeat,
                    type=kind,
                    message=message,
                    log_tail=tail,
                    path=r.path,
                )
            )
    return out


def conflicts(cells: Iterable[CellReport]) -> list[ConflictCopy]:
    """Every copy of a run that ``harness merge`` kept under ``conflicts/``, against the run
    kept in ``cells/``: the same result, a different one, or one of them not ok."""
    out = []
    for c in cells:
        kept = {r.repeat: r for r in c.runs}
        for copy in c.conflict_copies:
            main = kept.get(copy.repeat)
            main_status = main.status if main else MISSING
            same: bool | None = None
            if main is not None and main.status == OK and copy.status == OK:
                same = (main.trajectory, main.final_weights) == (
                    copy.trajectory,
                    copy.final_weights,
                )
            out.append(
                ConflictCopy(
                    cell=c.name,
                    repeat=copy.repeat,
                    path=copy.path,
                    kept=main.path if main else "",
                    status=copy.status,
                    kept_status=main_status,
                    same_result=same,
                    problem=copy.problem,
                )
            )
    return out


def machines(cells: Iterable[CellReport]) -> list[MachineInfo]:
    """The machines that ran the cells' runs and kept merge conflict copies, first seen first."""
    return machine_table((c.id, r.machine) for c in cells for r in [*c.runs, *c.conflict_copies])


def images(by_image: dict[str, list[CellReport]]) -> list[ImageInfo]:
    """Each image with the digests, ids and torch versions its ok runs recorded."""

    def seen(values: Iterable[str | None]) -> list[str]:
        return list(dict.fromkeys(v for v in values if v))

    out = []
    for image, cells in by_image.items():
        runs = [r for c in cells for r in c.runs if r.status == OK]
        out.append(
            ImageInfo(
                image=image,
                digests=seen(r.image_digest for r in runs),
                image_ids=seen(r.image_id for r in runs),
                torch=seen(r.torch for r in runs),
                cells=len(cells),
            )
        )
    return out
