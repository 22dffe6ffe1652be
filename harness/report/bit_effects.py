"""What changes the bits (issue 31): for each setting that varies in the matrix (of how the
training runs, not of what it trains), the image and the machine, whether cells that differ in
it alone have bit-identical trajectories.

A pair of cells is judged only when both reproduce on their own: where a cell's own repeats
differ, a difference between the cells says nothing about the setting (such pairs are counted
as ``unjudged_pairs``). A pair whose runs ran on different machines (CPU facts, or GPU models
and SM counts) is reported apart and never counted as the setting's effect: the machine may
have made the difference. The machine's own effect is counted in one place only, the
``machine`` row: the runs of one cell grouped by machine fingerprint. Control cells are left
out everywhere: they are made to diverge.

Each pair compares the first ok run of each cell (as ``summaries.compare_across`` does). For
``image`` itself a pair's ``image`` is "" (its ``values`` are the two images) and ``by_image``
is empty. On the ``machine`` row a pair's ``cells`` name one cell twice and its ``values`` are
the two machines' fingerprints."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import combinations

from harness.contract.machine import CODE_PATH, fingerprint, machines_differ
from harness.contract.settings import TRAINS
from harness.report.answer_data import CellPair, ImageEffect, SettingEffect
from harness.report.report_data import OK, REPRODUCES, CellReport, RunResult
from harness.report.summaries import PARAM_PREFIX, first_runs_equal, gpus_differ, label, varying

#: The row that counts the machine's own effect (a cell's repeats on several machines).
MACHINE = "machine"
IMAGE = "image"
SEED = "seed"


def what_changes_bits(cells: list[CellReport]) -> list[SettingEffect]:
    """One row per setting that varies among the (non-control) cells, in table order: the
    image first where there are several, each varying setting, then the machine where some
    cell's runs ran on more than one."""
    cells = [c for c in cells if not c.control]
    images = list(dict.fromkeys(_image(c) for c in cells))
    keys = ([IMAGE] if len(images) > 1 else []) + [k for k in varying(cells) if _asks(k)]
    out = [_setting_effect(key, cells, images) for key in keys]
    machine = _machine_effect(cells, images)
    return out + ([machine] if machine is not None else [])


def _asks(key: str) -> bool:
    """Whether to ask if ``key`` changes the bits: not of what is trained (``Setting.trains``,
    ``params.<key>``: another network or length has other bits by definition), nor of the seed
    (a change of seed is the noise test's yardstick, noise.py)."""
    return key not in TRAINS and key != SEED and not key.startswith(PARAM_PREFIX)


def _image(cell: CellReport) -> str:
    return str(cell.settings.get(IMAGE))


def _ok_runs(cell: CellReport) -> list[RunResult]:
    return [r for r in cell.runs if r.status == OK]


def _setting_effect(key: str, cells: list[CellReport], images: list[str]) -> SettingEffect:
    """Every pair of cells equal in all settings but ``key``: judged, or counted unjudged."""
    groups: dict[str, list[CellReport]] = defaultdict(list)
    for c in cells:
        rest = {k: v for k, v in c.settings.items() if k != key}
        groups[json.dumps(rest, sort_keys=True)].append(c)
    pairs: list[CellPair] = []
    unjudged = 0
    for members in groups.values():
        for a, b in combinations(members, 2):
            if json.dumps(a.settings.get(key)) == json.dumps(b.settings.get(key)):
                continue  # the same settings twice: no pair that differs in ``key``
            if a.verdict == REPRODUCES and b.verdict == REPRODUCES:
                pairs.append(_cell_pair(key, a, b))
            else:
                unjudged += 1
    return _effect(key, pairs, unjudged, images)


def _cell_pair(key: str, a: CellReport, b: CellReport) -> CellPair:
    """Two reproducing cells' first ok runs compared, and whether their machines differ."""
    runs = _ok_runs(a) + _ok_runs(b)
    # the machine's part a setting sets itself (cpu_isa: the code path) is no machine change
    ignore = CODE_PATH if key == "cpu_isa" else ()
    differ = machines_differ((r.machine for r in runs), ignore=ignore) or gpus_differ(runs)
    equal, step = _compare(_ok_runs(a)[0], _ok_runs(b)[0])
    return CellPair(
        setting=key,
        image="" if key == IMAGE else _image(a),
        cells=(a.name, b.name),
        values=(a.settings.get(key), b.settings.get(key)),
        equal=equal,
        first_step=step,
        machines_differ=differ,
    )


def _compare(a: RunResult, b: RunResult) -> tuple[bool, int | None]:
    """(equal trajectories, the first step where they differ: None when unknown), as the
    comparisons across images and GPU counts judge two runs (``summaries.first_runs_equal``)."""
    equal, divergence = first_runs_equal([a, b])
    return bool(equal), divergence.step if divergence is not None else None


def _agree(runs: list[RunResult]) -> bool:
    """At least two runs, all with one trajectory: they reproduce on their own."""
    return len(runs) >= 2 and len({r.trajectory for r in runs}) == 1


def _machine_effect(cells: list[CellReport], images: list[str]) -> SettingEffect | None:
    """The machine row: in each cell whose ok runs carry more than one machine fingerprint,
    the first run on each machine against the first on each other. A difference is judged
    only where each machine's runs agree among themselves (two at least), or the cell
    reproduces; None when every cell ran on one machine."""
    pairs: list[CellPair] = []
    unjudged = 0
    seen = False
    for c in cells:
        by_machine: dict[str, list[RunResult]] = {}
        for r in _ok_runs(c):
            if (fp := fingerprint(r.machine)) is not None:
                by_machine.setdefault(fp, []).append(r)
        if len(by_machine) < 2:
            continue
        seen = True
        for (fa, ra), (fb, rb) in combinations(by_machine.items(), 2):
            if c.verdict != REPRODUCES and not (_agree(ra) and _agree(rb)):
                unjudged += 1
                continue
            equal, step = _compare(ra[0], rb[0])
            pairs.append(
                CellPair(
                    setting=MACHINE,
                    image=_image(c),
                    cells=(c.name, c.name),
                    values=(fa, fb),
                    equal=equal,
                    first_step=step,
                )
            )
    return _effect(MACHINE, pairs, unjudged, images) if seen else None


def _effect(
    setting: str, pair_list: list[CellPair], unjudged: int, images: list[str]
) -> SettingEffect:
    """The counts over the same-machine pairs, the pairs across machines apart."""
    counted = [p for p in pair_list if p.machines_differ is None]
    apart = [p for p in pair_list if p.machines_differ is not None]
    changed = [p for p in counted if not p.equal]
    steps = [p.first_step for p in changed if p.first_step is not None]
    by_image = [] if setting == IMAGE else _by_image(counted, images)
    effect = SettingEffect(
        setting=setting,
        effect=_kind(len(counted), len(changed), by_image),
        pairs=len(counted),
        changed=len(changed),
        first_step=min(steps) if steps else None,
        by_image=by_image,
        other_machine_pairs=len(apart),
        other_machine_changed=sum(not p.equal for p in apart),
        unjudged_pairs=unjudged,
        pair_list=pair_list,
    )
    effect.sentence = _sentence(effect)
    return effect


def _by_image(counted: list[CellPair], images: list[str]) -> list[ImageEffect]:
    """Per image (first seen first) with at least one counted pair: changed of pairs."""
    out = []
    for image in images:
        mine = [p for p in counted if p.image == image]
        if mine:
            changed = sum(not p.equal for p in mine)
            out.append(ImageEffect(image=image, pairs=len(mine), changed=changed))
    return out


def _kind(pairs: int, changed: int, by_image: list[ImageEffect]) -> str:
    """``no_pairs``, ``never``, ``always``, ``one_image`` (every pair changes on some images,
    none on the others) or ``sometimes``."""
    if pairs == 0:
        return "no_pairs"
    if changed == 0:
        return "never"
    if changed == pairs:
        return "always"
    if len(by_image) > 1 and all(i.changed in (0, i.pairs) for i in by_image):
        return "one_image"
    return "sometimes"


def _n_pairs(n: int) -> str:
    return f"{n} pair" if n == 1 else f"{n} pairs"


def _sentence(e: SettingEffect) -> str:
    """The row in words: ``threads: changes the bits in 3 of 3 pairs (first at step 0)``."""
    name = label(e.setting)
    at = f"first at step {e.first_step}" if e.first_step is not None else "first step unknown"
    if e.effect == "no_pairs":
        text = f"{name}: no pair to compare"
        if not e.other_machine_pairs and not e.unjudged_pairs:
            text += " (no two reproducing cells differ in it alone)"
    elif e.effect == "never":
        text = f"{name}: never (0 of {_n_pairs(e.pairs)})"
    elif e.effect == "one_image":
        hit = [i for i in e.by_image if i.changed]
        rest = sum(i.pairs for i in e.by_image if not i.changed)
        there = sum(i.pairs for i in hit)
        text = (
            f"{name}: changes the bits only on {' and '.join(i.image for i in hit)} "
            f"({there} of {_n_pairs(there)} there; 0 of {rest} elsewhere), {at}"
        )
    else:
        text = f"{name}: changes the bits in {e.changed} of {_n_pairs(e.pairs)} ({at})"
    if e.other_machine_pairs:
        text += (
            f"; {_n_pairs(e.other_machine_pairs)} across machines not counted "
            f"(bits differ in {e.other_machine_changed})"
        )
    if e.unjudged_pairs and e.pairs == 0:
        why = "a machine's runs disagree" if e.setting == MACHINE else "a cell does not reproduce"
        text += f"; {_n_pairs(e.unjudged_pairs)} where {why}"
    return text
