"""Verdicts and divergences, from run records alone (no torch).

A cell is reproducible when every repeat finished ok with the same trajectory digest and the
same final-weights digest. losses.npy is read only where digests differ, to locate the first
divergence: the first step whose float32 bits differ in any rank.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from harness.contract import CELL_SETTINGS, LOSSES_FILE, RECORD_FILE
from harness.errors import HarnessError
from harness.record import RecordError, RunRecord, load_record
from harness.report.model import (
    CellReport,
    Comparison,
    Cost,
    Divergence,
    Failure,
    ImageInfo,
    Report,
    RunResult,
)

log = logging.getLogger(__name__)

#: Settings of the fully nondeterministic twin a cell's cost is measured against.
NONDETERMINISTIC = {
    "cudnn_deterministic": False,
    "cudnn_benchmark": True,
    "deterministic_algorithms": "off",
}


# ---------------------------------------------------------------- trajectories


def load_losses(run_dir: Path) -> np.ndarray:
    losses = np.load(run_dir / LOSSES_FILE, allow_pickle=False)
    return np.ascontiguousarray(losses.reshape(losses.shape[0], -1), dtype="<f4")


def ulp_order(bits: np.ndarray) -> np.ndarray:
    """Map float32 bit patterns (as int32) to integers that count ULPs monotonically."""
    wide = bits.astype(np.int64)
    return np.where(wide < 0, np.int64(-(2**31)) - wide, wide)


def divergence(
    ref: np.ndarray, other: np.ndarray, repeat: int, epoch_starts: list[tuple[int, int]]
) -> Divergence | None:
    """First differing step (by bits) of two [steps, ranks] trajectories, or None if equal."""
    if ref.shape[1] != other.shape[1]:
        return Divergence(repeat, 0, None, None, None, None, shape_differs=True)
    n = min(len(ref), len(other))
    a, b = ref[:n], other[:n]
    differs = (a.view("<i4") != b.view("<i4")).any(axis=1)
    if not differs.any():
        if len(ref) == len(other):
            return None
        return Divergence(repeat, n, *_epoch_batch(n, epoch_starts), None, None, True)
    step = int(np.argmax(differs))
    with np.errstate(invalid="ignore"):
        delta = np.abs(a.astype(np.float64) - b.astype(np.float64))
        max_abs = float(np.nanmax(delta)) if np.isfinite(delta).any() else float("nan")
    ulps = int(np.abs(ulp_order(a.view("<i4")) - ulp_order(b.view("<i4"))).max())
    epoch, batch = _epoch_batch(step, epoch_starts)
    return Divergence(repeat, step, epoch, batch, max_abs, ulps, len(ref) != len(other))


def _epoch_batch(step: int, epoch_starts: list[tuple[int, int]]) -> tuple[int | None, int | None]:
    found = None
    for epoch, first in epoch_starts:
        if first <= step:
            found = (epoch, step - first)
    return found if found else (None, None)


# ---------------------------------------------------------------- loading


def _run_result(run_dir: Path, repeat: int) -> RunResult:
    try:
        record = load_record(run_dir)
    except RecordError as exc:
        missing = not (run_dir / RECORD_FILE).exists()
        error = None if missing else {"type": "corrupt", "message": str(exc), "log_tail": ""}
        return RunResult(repeat, "missing" if missing else "failed", run_dir, error=error)
    return _from_record(record, run_dir, repeat)


def _from_record(record: RunRecord, run_dir: Path, repeat: int) -> RunResult:
    d = record.digests
    epochs = record.epochs
    last_acc = next((e.val_acc for e in reversed(epochs) if e.val_acc is not None), None)
    per_epoch = [
        (e.train_seconds or 0.0) + (e.val_seconds or 0.0)
        for e in epochs
        if e.train_seconds is not None
    ]
    seconds = statistics.fmean(per_epoch) if per_epoch else None
    if seconds is None and record.timing.wall_seconds and epochs:
        seconds = record.timing.wall_seconds / len(epochs)
    starts = [(e.epoch, e.first_step) for e in epochs]
    if not starts and record.steps_per_epoch:
        first = 0
        for i, n in enumerate(record.steps_per_epoch):
            starts.append((i, first))
            first += n
    return RunResult(
        repeat=repeat,
        status=record.status,
        run_dir=run_dir,
        trajectory=d.trajectory,
        init_weights=d.init_weights,
        final_weights=d.final_weights,
        steps=record.steps,
        ranks=record.ranks,
        epoch_starts=starts,
        val_acc=last_acc,
        seconds_per_epoch=seconds,
        error=record.error.model_dump() if record.error else None,
        image_digest=record.provenance.image_digest,
        image_id=record.provenance.image_id,
        torch=record.provenance.torch,
    )


def _cells_of(root: Path) -> tuple[str, list[dict[str, Any]], int | None]:
    """(name, cells, repeats) from the manifest, or by scanning cells/ when it is missing."""
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        return manifest.get("name", root.name), manifest["cells"], manifest.get("repeats")
    cells_root = root / "cells"
    if not cells_root.is_dir():
        raise HarnessError(
            f"{root} is not a results folder: no manifest.json and no cells/",
            "give the folder that `harness run` wrote (results/<name>-<time>/)",
        )
    cells: dict[str, dict[str, Any]] = {}
    for run_json in sorted(cells_root.glob(f"*/repeat-*/{RECORD_FILE}")):
        cell_dir = run_json.parent.parent
        spec = json.loads(run_json.read_text(encoding="utf-8")).get("spec", {})
        name, _, cid = cell_dir.name.rpartition("--")
        cells.setdefault(
            cid,
            {
                "id": cid,
                "name": name,
                "dir": f"cells/{cell_dir.name}",
                "settings": {k: spec.get(k) for k in CELL_SETTINGS},
            },
        )
    return root.name, list(cells.values()), None


def _repeat_dirs(cell_dir: Path, repeats: int | None) -> list[tuple[int, Path]]:
    if repeats is not None:
        return [(k, cell_dir / f"repeat-{k}") for k in range(repeats)]
    found = sorted(int(p.name.split("-")[1]) for p in cell_dir.glob("repeat-*"))
    return [(k, cell_dir / f"repeat-{k}") for k in found]


# ---------------------------------------------------------------- verdicts


def analyze_cell(meta: dict[str, Any], runs: list[RunResult]) -> CellReport:
    ok = [r for r in runs if r.status == "ok"]
    distinct = len({r.trajectory for r in ok})
    divergences: list[Divergence] = []
    if ok and distinct > 1:
        ref = ok[0]
        ref_losses = load_losses(ref.run_dir)
        for other in ok[1:]:
            if other.trajectory != ref.trajectory:
                found = divergence(
                    ref_losses, load_losses(other.run_dir), other.repeat, ref.epoch_starts
                )
                if found is not None:
                    divergences.append(found)
    first = min(divergences, key=lambda d: d.step) if divergences else None
    if first is not None:
        deltas = [d.max_abs_delta for d in divergences if d.max_abs_delta is not None]
        ulps = [d.max_ulps for d in divergences if d.max_ulps is not None]
        first = Divergence(
            first.repeat,
            first.step,
            first.epoch,
            first.batch,
            max(deltas) if deltas else None,
            max(ulps) if ulps else None,
            first.shape_differs,
        )
    init_equal = _all_equal([r.init_weights for r in ok]) if len(ok) > 1 else None
    final_equal = _all_equal([r.final_weights for r in ok]) if len(ok) > 1 else None
    all_ok = len(ok) == len(runs)
    if len(runs) < 2:
        reproducible = None
    else:
        reproducible = all_ok and distinct == 1 and bool(final_equal)
    accs = [r.val_acc for r in ok if r.val_acc is not None]
    secs = [r.seconds_per_epoch for r in ok if r.seconds_per_epoch is not None]
    return CellReport(
        id=meta["id"],
        name=meta["name"],
        settings=meta["settings"],
        repeats=len(runs),
        ok_runs=len(ok),
        distinct_trajectories=distinct,
        reproducible=reproducible,
        first_divergence=first,
        divergences=divergences,
        init_equal=init_equal,
        final_equal=final_equal,
        val_acc_mean=statistics.fmean(accs) if accs else None,
        val_acc_sd=statistics.stdev(accs) if len(accs) > 1 else None,
        seconds_per_epoch=statistics.fmean(secs) if secs else None,
        verdict=_verdict(len(runs), len(ok), distinct, reproducible, final_equal, first),
        runs=runs,
    )


def _all_equal(values: list[str | None]) -> bool:
    return None not in values and len(set(values)) == 1


def _verdict(
    repeats: int,
    ok: int,
    distinct: int,
    reproducible: bool | None,
    final_equal: bool | None,
    first: Divergence | None,
) -> str:
    if ok < repeats:
        return f"{repeats - ok} of {repeats} runs did not finish"
    if reproducible is None:
        return "one repeat: nothing to compare"
    if reproducible:
        return "reproduces bit for bit"
    if distinct == 1 and final_equal is False:
        return "identical losses, but the final weights differ"
    if first is not None and first.epoch is not None:
        return (
            f"{distinct} distinct trajectories; first divergence at epoch {first.epoch}, "
            f"batch {first.batch} (step {first.step})"
        )
    return f"{distinct} distinct trajectories"


# ---------------------------------------------------------------- summaries


def _varying(cells: list[CellReport]) -> list[str]:
    return [k for k in CELL_SETTINGS if len({json.dumps(c.settings.get(k)) for c in cells}) > 1]


def _fmt_setting(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value) if not isinstance(value, str) else value}"


def describe_image(image: str, cells: list[CellReport]) -> str:
    """A sentence or two: which settings reproduce, and which axis breaks reproducibility."""
    judged = [c for c in cells if c.reproducible is not None]
    failed = [c for c in cells if c.ok_runs < c.repeats]
    good = [c for c in judged if c.reproducible]
    varying = _varying(cells)
    parts: list[str] = []

    def label(c: CellReport) -> str:
        keys = varying or ["placement"]
        return ", ".join(_fmt_setting(k, c.settings.get(k)) for k in keys)

    if not judged:
        parts.append(f"On {image}, no cell has two repeats to compare.")
    elif len(good) == len(judged):
        parts.append(f"On {image}, all {len(judged)} cells reproduce bit for bit.")
    elif not good:
        parts.append(f"On {image}, none of the {len(judged)} cells reproduces bit for bit.")
    else:
        names = "; ".join(label(c) for c in good)
        parts.append(
            f"On {image}, {len(good)} of {len(judged)} cells reproduce bit for bit "
            f"({names}); the other {len(judged) - len(good)} do not."
        )
    for axis in varying:
        by_value: dict[str, list[CellReport]] = defaultdict(list)
        for c in judged:
            by_value[json.dumps(c.settings.get(axis))].append(c)
        never = [v for v, cs in by_value.items() if not any(c.reproducible for c in cs)]
        always = [v for v, cs in by_value.items() if all(c.reproducible for c in cs)]
        if never and always:
            bad = " and ".join(_fmt_setting(axis, json.loads(v)) for v in never)
            ok = " and ".join(_fmt_setting(axis, json.loads(v)) for v in always)
            verb = "never reproduces" if len(never) == 1 else "never reproduce"
            parts.append(f"{axis} breaks it: {bad} {verb}, while {ok} always does.")
    only_weights = [c for c in judged if c.distinct_trajectories == 1 and c.final_equal is False]
    if only_weights:
        parts.append(
            f"{len(only_weights)} cell(s) have identical losses but different final weights."
        )
    if failed:
        parts.append(f"{len(failed)} cell(s) have runs that did not finish (see Failed runs).")
    return " ".join(parts)


def _compare(axis: str, cells: list[CellReport]) -> list[Comparison]:
    groups: dict[str, list[CellReport]] = defaultdict(list)
    for c in cells:
        key = {k: v for k, v in c.settings.items() if k != axis}
        groups[json.dumps(key, sort_keys=True)].append(c)
    out = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        refs = [next((r for r in c.runs if r.status == "ok"), None) for c in members]
        equal: bool | None = None
        div = None
        if all(refs):
            equal = len({r.trajectory for r in refs}) == 1  # type: ignore[union-attr]
            if not equal:
                base = load_losses(refs[0].run_dir)  # type: ignore[union-attr]
                for r in refs[1:]:
                    if r.trajectory != refs[0].trajectory:  # type: ignore[union-attr]
                        div = divergence(
                            base,
                            load_losses(r.run_dir),
                            r.repeat,  # type: ignore[union-attr]
                            refs[0].epoch_starts,
                        )  # type: ignore[union-attr]
                        break
        settings = json.loads(key)
        out.append(
            Comparison(
                axis, settings, [(str(c.settings.get(axis)), c.name) for c in members], equal, div
            )
        )
    return out


def _costs(cells: list[CellReport]) -> list[Cost]:
    index = {json.dumps(c.settings, sort_keys=True): c for c in cells}
    out = []
    for c in cells:
        if all(c.settings.get(k) == v for k, v in NONDETERMINISTIC.items()):
            continue
        twin = index.get(json.dumps({**c.settings, **NONDETERMINISTIC}, sort_keys=True))
        if twin is not None:
            out.append(Cost(c.name, twin.name, c.seconds_per_epoch, twin.seconds_per_epoch))
    return out


def _failures(cells: Iterable[CellReport]) -> list[Failure]:
    out = []
    for c in cells:
        for r in c.runs:
            if r.status == "ok":
                continue
            error = r.error or {}
            message = error.get("message") or ("no run record" if r.status == "missing" else "")
            out.append(
                Failure(
                    c.name,
                    r.repeat,
                    error.get("type") or r.status,
                    message,
                    error.get("log_tail") or "",
                )
            )
    return out


def analyze(root: str | Path) -> Report:
    """Build the report model of a results folder."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(
            f"{root}: no such results folder", "give the folder that `harness run` wrote"
        )
    name, metas, repeats = _cells_of(root)
    cells = []
    for meta in metas:
        cell_dir = root / meta.get("dir", f"cells/{meta['name']}--{meta['id']}")
        runs = [_run_result(d, k) for k, d in _repeat_dirs(cell_dir, repeats)]
        cells.append(analyze_cell(meta, runs))
    by_image: dict[str, list[CellReport]] = defaultdict(list)
    for c in cells:
        by_image[str(c.settings.get("image"))].append(c)
    summaries = {image: describe_image(image, cs) for image, cs in by_image.items()}
    comparisons = _compare("image", cells) + _compare("devices", cells)
    return Report(
        name,
        root,
        cells,
        summaries,
        comparisons,
        _costs(cells),
        _failures(cells),
        _images(by_image),
    )


def _images(by_image: dict[str, list[CellReport]]) -> list[ImageInfo]:
    """Each image with the digests, ids and torch versions its ok runs recorded."""
    out = []
    for image, cells in by_image.items():
        runs = [r for c in cells for r in c.runs if r.status == "ok"]

        def seen(values: Iterable[str | None]) -> list[str]:
            return list(dict.fromkeys(v for v in values if v))

        out.append(
            ImageInfo(
                image,
                seen(r.image_digest for r in runs),
                seen(r.image_id for r in runs),
                seen(r.torch for r in runs),
                len(cells),
            )
        )
    return out
