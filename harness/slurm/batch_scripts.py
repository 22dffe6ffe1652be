"""What ``harness submit slurm`` asks Slurm for, and the scripts and ``sbatch`` lines that ask.

Pure: nothing here calls Slurm or writes a file, so ``--dry-run`` and the tests see exactly
what a submission would send.

Why one array per resource request: every task of a Slurm job array asks for the same
resources, so shards that need different GPU or CPU counts go to different arrays (usually
there is one). The array task id is the shard index in every array, so a task's log, its
results folder and ``harness run --shard I/N`` all name the same ``I``.

The batch scripts are Python, run by the harness's own interpreter (the ``#!`` line): their
only variable part is the submission folder, written as a JSON string literal, and every
option they carry was checked against a pattern first. No shell ever reads user input.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.matrix import LoadedMatrix
from harness.matrix.models import SBATCH_OPTION_PATTERN
from harness.results import layout
from harness.run.schedule import need_of
from harness.run.shard import Shard
from harness.text import strip_controls

#: Seconds a task needs besides its runs: reading MNIST, starting Python, writing the report;
#: with containers, building the workload image (a CUDA base is pulled once per node).
SETUP_S = {"local": 600, "docker": 1800}
#: The merge job's time limit: merging and reporting copies files and draws plots.
MERGE_TIME = "1:00:00"

#: Options the harness writes itself: ``slurm.sbatch`` may not give them (each has its own key
#: or is the harness's to set).
OWN_OPTIONS = {
    "array": "the harness sets it (one task per shard)",
    "dependency": "the harness sets it (the merge job waits for the arrays)",
    "output": "the harness sets it (logs go to <out>/slurm/logs/)",
    "error": "the harness keeps errors with the output in <out>/slurm/logs/",
    "parsable": "the harness sets it",
    "wrap": "the harness writes the batch scripts",
    "job-name": "the harness names the jobs after the matrix",
    "chdir": "the scripts use absolute paths",
    "cpus-per-task": "use slurm.cpus_per_task (or --cpus-per-task)",
    "ntasks": "each array task is one harness process",
    "nodes": "each array task runs on one node",
    "gres": "the GPU count comes from the cells; use slurm.gpu_type (or --gpu-type) for a type",
    "gpus": "the GPU count comes from the cells",
    "gpus-per-task": "the GPU count comes from the cells",
    "gpus-per-node": "the GPU count comes from the cells",
    "time": "use slurm.time (or --time)",
    "partition": "use slurm.partition (or --partition)",
    "account": "use slurm.account (or --account)",
    "qos": "use slurm.qos (or --qos)",
}


@dataclass(frozen=True)
class SlurmRequest:
    """The resolved ``slurm:`` options (matrix section, then command-line overrides)."""

    python: str
    executor: str = "auto"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    gpu_type: str | None = None
    cpus_per_task: int | None = None
    sbatch: tuple[str, ...] = ()
    data_dir: str | None = None

    def check(self) -> None:
        """Refuse what would make a batch script other than the one shown: a ``#!`` line that is
        not one absolute path, a control character (a line break, a terminal escape) anywhere,
        an extra option the harness sets itself."""
        for name, value in (
            ("slurm.python", self.python),
            *(("slurm.sbatch", o) for o in self.sbatch),
        ):
            if has_controls(value):
                raise HarnessError(
                    f"{name} {value!r} holds a control character: a batch script line must be "
                    "printable, and the dry run would show it to your terminal",
                    f"remove it from {name} (or the command-line option that set it)",
                )
        if not self.python.startswith("/") or re.search(r"\s", self.python):
            raise HarnessError(
                f"slurm.python {self.python!r} cannot be a batch script's #! line: it must be an "
                "absolute path without blanks",
                "give the nodes' Python as such a path (a symbolic link without blanks will do): "
                "--python /shared/venv/bin/python",
            )
        for option in self.sbatch:
            if not re.fullmatch(SBATCH_OPTION_PATTERN, option):
                raise HarnessError(
                    f"extra sbatch option {option!r} is not one --name or --name=value",
                    "write each option as --name=value, without blanks or quotes, e.g. --mem=16G",
                )
            name = option[2:].split("=", 1)[0]
            if name in OWN_OPTIONS:
                raise HarnessError(
                    f"extra sbatch option {option!r}: {OWN_OPTIONS[name]}",
                    f"remove --{name} from slurm.sbatch (or --sbatch-option)",
                )


@dataclass(frozen=True)
class ArrayGroup:
    """One job array: the shards that ask for the same resources per task."""

    number: int
    shards: tuple[int, ...]
    cpus: int
    gpus: int
    time: str
    runs: int  # runs in its largest shard


def resources(group: ArrayGroup) -> str:
    """``1 CPU, no GPU, time limit 01:10:00 per task``: an array's request in words."""
    gpus = f"{group.gpus} GPU{'s' if group.gpus != 1 else ''}" if group.gpus else "no GPU"
    cpus = f"{group.cpus} CPU{'s' if group.cpus != 1 else ''}"
    return f"{cpus}, {gpus}, time limit {group.time} per task"


def slurm_time(seconds: float) -> str:
    """Seconds as sbatch's ``D-HH:MM:SS`` (``HH:MM:SS`` under a day), up to a whole minute."""
    minutes = max(1, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def array_spec(indexes: Iterable[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3,5"``: sbatch's ``--array`` list."""
    runs: list[list[int]] = []
    for i in sorted(set(indexes)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _cell_cores(shard: Shard) -> int:
    return max((need_of(c.spec(0)).cores for c in shard.cells), default=1)


def task_seconds(shard: Shard, repeats: int, timeout_s: float, cpus: int, setup_s: int) -> int:
    """The worst case of one task: every run to its timeout, as many side by side as ``cpus``
    and the shard's GPUs let each cell's runs go, plus ``setup_s``."""
    total = float(setup_s)
    for cell in shard.cells:
        need = need_of(cell.spec(0))
        slots = cpus // max(1, need.cores)
        if need.gpus:
            slots = min(slots, shard.gpus // need.gpus)
        total += math.ceil(repeats / max(1, slots)) * timeout_s
    return math.ceil(total)


def array_groups(
    matrix: LoadedMatrix, shards: list[Shard], request: SlurmRequest, executor: str
) -> list[ArrayGroup]:
    """The arrays of the shards in ``shards`` (those to run now), one per (CPUs, GPUs)."""
    repeats = matrix.model.run.repeats
    timeout_s = float(matrix.model.run.timeout_s)
    setup_s = SETUP_S[executor]
    by_need: dict[tuple[int, int], list[Shard]] = {}
    for shard in shards:
        cores = _cell_cores(shard)
        cpus = request.cpus_per_task or cores
        if cpus < cores:
            raise HarnessError(
                f"--cpus-per-task {cpus} is fewer than the {cores} cores one run of shard "
                f"{shard.index} needs (threads x devices)",
                f"ask for at least {cores}, or lower the cells' threads",
            )
        by_need.setdefault((cpus, shard.gpus), []).append(shard)
    groups = []
    for number, ((cpus, gpus), members) in enumerate(sorted(by_need.items()), start=1):
        seconds = max(task_seconds(s, repeats, timeout_s, cpus, setup_s) for s in members)
        groups.append(
            ArrayGroup(
                number=number,
                shards=tuple(s.index for s in members),
                cpus=cpus,
                gpus=gpus,
                time=request.time or slurm_time(seconds),
                runs=max(len(s.cells) for s in members) * repeats,
            )
        )
    return groups


# ---------------------------------------------------------------- the batch scripts


def _common_lines(request: SlurmRequest, job_name: str) -> list[str]:
    lines = [f"--job-name={job_name}"]
    for key in ("partition", "account", "qos"):
        value = getattr(request, key)
        if value is not None:
            lines.append(f"--{key}={value}")
    return lines


def has_controls(text: str) -> bool:
    """Whether ``text`` holds a control character: a line break (which would start a line of
    Python in a batch script), a terminal escape, a bidirectional control."""
    return strip_controls(text) != text


def literal(text: str) -> str:
    """``text`` as a JSON (and Python) string literal: ASCII, every control escaped."""
    return json.dumps(text, ensure_ascii=True)


def _script(request: SlurmRequest, options: list[str], what: str, kind: str, root: Path) -> str:
    head = [f"#!{request.python}"]
    head += [f"#SBATCH {o}" for o in options + list(request.sbatch)]
    body = [
        f"# Written by harness submit slurm: {what}.",
        "# Submit it again with harness submit slurm (it knows which shards are left).",
        "import sys",
        "",
        "from harness.cli.slurm_task import main",
        "",
        f"sys.exit(main({literal(kind)}, {literal(str(root))}))",
    ]
    for line in head + body:  # each line is one line, whatever a check above let through
        if has_controls(line):
            raise HarnessError(
                f"a batch script line would hold a control character: {literal(line)}",
                "remove it from the slurm options, the matrix name or --out",
            )
    return "\n".join(head + body) + "\n"


def array_script(
    request: SlurmRequest, group: ArrayGroup, matrix_name: str, total: int, root: Path
) -> str:
    gres = []
    if group.gpus:
        kind = f"{request.gpu_type}:" if request.gpu_type else ""
        gres = [f"--gres=gpu:{kind}{group.gpus}"]
    options = (
        _common_lines(request, f"harness-{matrix_name}")
        + ["--nodes=1", "--ntasks=1", f"--cpus-per-task={group.cpus}"]
        + gres
        + [f"--time={group.time}"]
    )
    what = (
        f"one shard of the {total} of matrix {matrix_name} per array task, the task id "
        f"being the shard ({resources(group)}; up to {group.runs} runs per task)"
    )
    return _script(request, options, what, "shard", root)


def merge_script(request: SlurmRequest, matrix_name: str, root: Path) -> str:
    options = _common_lines(request, f"harness-{matrix_name}-merge") + [
        "--nodes=1",
        "--ntasks=1",
        "--cpus-per-task=1",
        f"--time={MERGE_TIME}",
    ]
    what = (
        f"merge the shards of matrix {matrix_name} into {literal(str(root))} and write its report"
    )
    return _script(request, options, what, "merge", root)


def array_argv(root: Path, group: ArrayGroup) -> list[str]:
    return [
        "sbatch",
        "--parsable",
        f"--array={array_spec(group.shards)}",
        f"--output={layout.shard_log_pattern(root)}",
        str(layout.array_script(root, group.number)),
    ]


def merge_argv(root: Path, after: list[str]) -> list[str]:
    dependency = [f"--dependency=afterany:{':'.join(after)}"] if after else []
    return [
        "sbatch",
        "--parsable",
        *dependency,
        f"--output={layout.merge_log_pattern(root)}",
        str(layout.merge_script(root)),
    ]


def shown(argv: list[str]) -> str:
    """A command line as a user would type it (for reading only: it is never run as text)."""
    return shlex.join(argv)
