"""The recipe per image (per image and training, where an image trains more than one model
or set of params: ``WORKLOAD_SETTINGS``): the fastest cell that reproduces on it, what it costs
against the fastest cell there, the settings the matrix shows it needs, and the same as code a
user pastes into a Lightning script (``recipe_code``: what the workload does for those
settings, in its order: harness/workload/training.py).

A setting is *required* only where the matrix shows it: every reproducing cell has one value,
and a cell that differs from a reproducing one in that setting alone diverges. A setting that
merely never varies among the reproducing cells is not required: nothing flipped it."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

from harness.contract.machine import isa_environment
from harness.contract.settings import DEFAULTS, TRAINS
from harness.contract.spec import cublas_workspace_in_force
from harness.report.answer_data import Recipe, RequiredSetting
from harness.report.report_data import DIVERGES, OK, REPRODUCES, UNKNOWN, CellReport
from harness.report.summaries import (
    PARAM_PREFIX,
    fmt_setting,
    report_keys,
    setting_keys,
    varying,
)

#: Settings the code needs beside the report's columns (the seed, the hash seed).
CODE_SETTINGS = ("seed", "threads", "pythonhashseed")

#: Where the seed goes, as the code's comment says it (harness/workload/training.py).
PLACEMENT_WORDS = {
    "process_start": "# seed first thing in the process, before data and model:",
    "before_model": "# seed before the model is built:",
    "before_trainer": "# seed after the model, before the Trainer:",
}


#: The settings that say what is trained rather than how it runs (``Setting.trains``, and each
#: ``params.<key>``): a recipe is given per value of those that vary on an image.
WORKLOAD_SETTINGS = TRAINS


def recipes(cells: list[CellReport], *, withheld: dict[str, str] | None = None) -> list[Recipe]:
    """One recipe per image and training (``WORKLOAD_SETTINGS``), first seen first.
    ``withheld``: image -> why no recipe is given there (its control cell reproduced: the
    harness could not tell a difference)."""
    by_image: dict[str, list[CellReport]] = {}
    for c in cells:
        by_image.setdefault(str(c.settings.get("image")), []).append(c)
    out = []
    for image, members in by_image.items():
        reason = (withheld or {}).get(image)
        if reason is not None:
            out.append(
                Recipe(
                    image=image,
                    cell=None,
                    withheld=reason,
                    sentence=f"On {image}, no recipe: {reason}.",
                )
            )
            continue
        for workload, group in _by_workload([c for c in members if not c.control]):
            out.append(_recipe(image, group, workload))
    return out


def _by_workload(cells: list[CellReport]) -> list[tuple[dict[str, Any], list[CellReport]]]:
    """The cells grouped by the workload settings that vary among them, first seen first."""
    keys = [k for k in varying(cells) if k in WORKLOAD_SETTINGS or k.startswith(PARAM_PREFIX)]
    groups: dict[str, list[CellReport]] = {}
    for c in cells:
        groups.setdefault(json.dumps([c.settings.get(k) for k in keys]), []).append(c)
    return [({k: g[0].settings.get(k) for k in keys}, g) for g in groups.values()]


def median_seconds(cell: CellReport) -> float | None:
    """The median seconds per epoch over the cell's ok runs that timed it (None: none did)."""
    times = [
        r.seconds_per_epoch for r in cell.runs if r.status == OK and r.seconds_per_epoch is not None
    ]
    return statistics.median(times) if times else None


def _fastest(cells: list[CellReport]) -> tuple[CellReport | None, float | None]:
    """The cell with the lowest median time (untimed cells last, ties in matrix order)."""
    timed = [(median_seconds(c), i, c) for i, c in enumerate(cells)]
    if not timed:
        return None, None
    seconds, _, cell = min(timed, key=lambda t: (t[0] is None, t[0] or 0.0, t[1]))
    return cell, seconds


def _recipe(image: str, cells: list[CellReport], workload: dict[str, Any]) -> Recipe:
    """The recipe of one image and training from its cells (controls left out)."""
    good = [c for c in cells if c.verdict == REPRODUCES]
    fastest, fastest_s = _fastest([c for c in cells if median_seconds(c) is not None])
    base = Recipe(
        image=image,
        cell=None,
        workload=workload,
        fastest_cell=fastest.name if fastest else None,
        fastest_seconds_per_epoch=fastest_s,
    )
    if not good:
        return _no_recipe(base, cells)
    cell, seconds = _fastest(good)
    assert cell is not None
    base.cell, base.cell_id, base.seconds_per_epoch = cell.name, cell.id, seconds
    if seconds is not None and fastest_s:
        base.cost_ratio = seconds / fastest_s
    base.settings = shown_settings(cell, cells)
    base.required = required_settings(cells)
    base.code, base.env = recipe_code(base.settings)
    base.sentence = _sentence(base, varying(cells))
    return base


def shown_settings(cell: CellReport, cells: list[CellReport]) -> dict[str, Any]:
    """The cell's settings as the report shows them on its image, with those the code needs;
    a setting an older record lacks at its default (as ``summaries.effective`` reads it)."""
    wanted = set(report_keys(cells)) | set(CODE_SETTINGS)
    out = {}
    for key in setting_keys(cells):
        if key in wanted:
            value = cell.settings.get(key)
            out[key] = DEFAULTS.get(key) if value is None else value
    return out


def _without(cell: CellReport, key: str) -> str:
    return json.dumps({k: v for k, v in cell.settings.items() if k != key}, sort_keys=True)


def required_settings(cells: list[CellReport]) -> list[RequiredSetting]:
    """The settings every reproducing cell shares whose flip alone (from some reproducing cell)
    diverges, with the diverging cells that show it."""
    good = [c for c in cells if c.verdict == REPRODUCES]
    out = []
    for key in setting_keys(cells):
        values = {json.dumps(c.settings.get(key)) for c in good}
        if key == "image" or len(values) != 1:
            continue
        (value,) = values
        twins = {_without(c, key) for c in good}
        broken = [
            c.name
            for c in cells
            if c.verdict == DIVERGES
            and json.dumps(c.settings.get(key)) != value
            and _without(c, key) in twins
        ]
        if broken:
            out.append(RequiredSetting(setting=key, value=json.loads(value), broken_by=broken))
    return out


def _agreement(cell: CellReport) -> float:
    """How long a diverging cell's repeats agree: the step of its first divergence (losses
    equal throughout: infinite; unreadable: -1)."""
    if cell.first_divergence is not None:
        return cell.first_divergence.step
    return math.inf if cell.distinct_trajectories <= 1 else -1


def _no_recipe(base: Recipe, cells: list[CellReport]) -> Recipe:
    """No cell reproduces: name the diverging cell whose repeats agree longest."""
    judged = [c for c in cells if c.verdict != UNKNOWN]
    if not judged:
        base.sentence = f"On {_where(base)}, no cell has a verdict: no recipe."
        return base
    ranked = sorted(
        enumerate(judged), key=lambda t: (-_agreement(t[1]), t[1].distinct_trajectories, t[0])
    )
    nearest = ranked[0][1]
    base.nearest = nearest.name
    if nearest.first_divergence is not None:
        until = f"its repeats agree until step {nearest.first_divergence.step}"
    elif nearest.distinct_trajectories <= 1:
        until = "its repeats' losses agree at every step, its final weights do not"
    else:
        until = "where its repeats part is not known"
    base.sentence = (
        f"On {_where(base)}, no cell reproduces; the nearest is {nearest.name} ({until})."
    )
    return base


def _sentence(recipe: Recipe, moving: list[str]) -> str:
    """The recipe in one line: its varying and required settings, its cost, what it needs."""
    needed = [r.setting for r in recipe.required]
    keys = [k for k in moving if k in recipe.settings or k in needed]
    keys += [k for k in needed if k not in keys]
    what = ", ".join(fmt_setting(k, recipe.settings.get(k)) for k in keys) or str(recipe.cell)
    if recipe.seconds_per_epoch is None:
        cost = "(its time was not recorded)"
    elif recipe.fastest_cell == recipe.cell or recipe.cost_ratio is None or recipe.cost_ratio <= 1:
        cost = f"at {recipe.seconds_per_epoch:.2f} s/epoch (median), the fastest cell there"
    else:
        cost = (
            f"at {recipe.seconds_per_epoch:.2f} s/epoch (median), ×{recipe.cost_ratio:.2f} the "
            f"fastest cell's ({recipe.fastest_cell})"
        )
    sentence = f"On {_where(recipe)}, {what} reproduces {cost}"
    if recipe.required:
        needs = ", ".join(fmt_setting(r.setting, r.value) for r in recipe.required)
        sentence += f"; it needs {needs}"
    return sentence + "."


def _where(recipe: Recipe) -> str:
    """``local``, or ``local (model=cnn)`` where the image trains more than one thing."""
    if not recipe.workload:
        return recipe.image
    trains = ", ".join(fmt_setting(k, v) for k, v in recipe.workload.items())
    return f"{recipe.image} ({trains})"


def _given(settings: dict[str, Any], name: str) -> Any:
    value = settings.get(name)
    return DEFAULTS[name] if value is None else value


def recipe_env(settings: dict[str, Any]) -> dict[str, str]:
    """The variables the run had from its start (harness/contract/spec.py ``run_environment``):
    the thread counts, the hash seed (Python reads it only at start-up), the cuBLAS workspace
    in force and the CPU code path's ceiling."""
    threads = str(_given(settings, "threads"))
    env = {
        "PYTHONHASHSEED": str(_given(settings, "pythonhashseed")),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    workspace = cublas_workspace_in_force(
        _given(settings, "cublas_workspace"), _given(settings, "deterministic_algorithms")
    )
    if workspace is not None:
        env["CUBLAS_WORKSPACE_CONFIG"] = workspace
    env.update(isa_environment(_given(settings, "cpu_isa")))
    return env


def _model_lines(settings: dict[str, Any]) -> list[str]:
    """The model line; for a build function, its params named, numbers and booleans with their
    values and a string as ``(text)``: a string may hold anything, and report.json has it."""
    entry = settings.get("entry")
    if entry is None:
        return [
            f"model = YourModule()  # the harness trained its built-in {_given(settings, 'model')}"
        ]
    params = settings.get("params")
    if not isinstance(params, dict):
        params = {
            k[len(PARAM_PREFIX) :]: v for k, v in settings.items() if k.startswith(PARAM_PREFIX)
        }
    shown = ", ".join(
        f"{k}=(text)" if isinstance(v, str) else f"{k}={v!r}" for k, v in sorted(params.items())
    )
    return [
        f"# the model: your build function {entry} with params {shown or 'none'}",
        "model = YourModule()",
    ]


def _seed_lines(settings: dict[str, Any]) -> list[str]:
    seed = int(_given(settings, "seed"))
    placement = _given(settings, "placement")
    if placement not in PLACEMENT_WORDS:
        return ["# no seed (placement=none): only your own code's seeding, if any, fixes the run"]
    return [
        PLACEMENT_WORDS[placement],
        f"torch.manual_seed({seed})",
        f"torch.cuda.manual_seed_all({seed})",
        f"np.random.seed({seed})",
        f"random.seed({seed})",
    ]


def recipe_code(settings: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """A short Lightning snippet that does what the workload did for ``settings`` (threads, the
    seed at its placement, the cuDNN, TF32 and deterministic-algorithm flags, the Trainer),
    and the environment variables it needs set before Python starts (also its first lines)."""
    env = recipe_env(settings)
    algorithms = _given(settings, "deterministic_algorithms")
    use = {"off": "False", "on": "True", "warn": "True, warn_only=True"}[algorithms]
    tf32 = _given(settings, "allow_tf32")
    devices = int(_given(settings, "devices"))
    placement = _given(settings, "placement")
    seed, model = _seed_lines(settings), _model_lines(settings)
    lines = [f"# before Python starts: export {k}={v}" for k, v in env.items()]
    lines += [
        "import random",
        "import numpy as np",
        "import torch",
        "import lightning as L  # or: import pytorch_lightning as L",
        "",
        f"torch.set_num_threads({int(_given(settings, 'threads'))})",
        "torch.set_num_interop_threads(1)",
    ]
    lines += seed if placement == "process_start" else []
    lines += [
        f"torch.backends.cudnn.deterministic = {bool(_given(settings, 'cudnn_deterministic'))}",
        f"torch.backends.cudnn.benchmark = {bool(_given(settings, 'cudnn_benchmark'))}",
        f"torch.backends.cuda.matmul.allow_tf32 = {bool(tf32)}",
        f"torch.backends.cudnn.allow_tf32 = {bool(tf32)}",
        f"torch.use_deterministic_algorithms({use})",
    ]
    lines += seed if placement in ("before_model", "none") else []
    lines += model
    lines += seed if placement == "before_trainer" else []
    strategy = ', strategy="ddp"' if devices > 1 else ""
    accelerator = json.dumps(str(_given(settings, "accelerator")))
    lines.append(f"trainer = L.Trainer(accelerator={accelerator}, devices={devices}{strategy})")
    return "\n".join(lines) + "\n", env
