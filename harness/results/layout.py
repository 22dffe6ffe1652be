"""The results folder: every name in it. Nothing else spells them.

::

    <out>/manifest.json       what was run (``Manifest``, harness/results/manifest.py)
    <out>/matrix.yaml         the matrix as it was run
    <out>/.lock               held (flock) while a harness writes here; holds its pid
    <out>/cells/<cell name>--<cell id>/repeat-<k>/
                              one run; its files are named in harness/contract/files.py
    <out>/report.md  report.json  report.csv  plots/
    <out>/diagnoses/<name>/   one `harness diagnose`: diagnosis.json, diagnosis.md, and the
                              two replays' run folders a/ and b/
    <out>/conflicts/<k>-<input folder>/cells/...   runs `harness merge` set aside
    <out>/superseded/<UTC time>/cells/<cell name>--<cell id>/repeat-<k>/
                              finished runs `harness run` set aside, whole, instead of reusing
                              them (another spec or identity, or damaged files); never deleted
    <out>/code/<digest>/      a read-only copy of the user's code folder (workload.path), named
                              by its digest: what the runs of a build function import, and
                              what `harness diagnose` replays
    <out>/slurm/              `harness submit slurm`: submission.json, the batch scripts
                              (array-<k>.sbatch, merge.sbatch), logs/, and shards/shard-<i>/
                              (one results folder per array task); <out> itself is the merged
                              results folder once the merge job has run

The manifest's format and its checks are harness/results/manifest.py's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from harness.contract import RECORD_FILE

MANIFEST_FILE = "manifest.json"
MATRIX_FILE = "matrix.yaml"
LOCK_FILE = ".lock"
CELLS_DIR = "cells"
CONFLICTS_DIR = "conflicts"
SUPERSEDED_DIR = "superseded"
PLOTS_DIR = "plots"
DIAGNOSES_DIR = "diagnoses"
DIAGNOSIS_FILE = "diagnosis.json"
DIAGNOSIS_MARKDOWN = "diagnosis.md"
#: report format -> file name, in the results folder
REPORT_FILES = {"md": "report.md", "json": "report.json", "csv": "report.csv"}
#: Where ``harness run`` writes without ``--out``: results/<name>-<UTC time>/
DEFAULT_RESULTS_ROOT = Path("results")

_CELL_SEPARATOR = "--"
_REPEAT_PREFIX = "repeat-"


#: ``harness submit slurm``'s folder inside the merged results folder, and what it holds
SLURM_DIR = "slurm"
SUBMISSION_FILE = "submission.json"
SHARDS_DIR = "shards"
SLURM_LOGS_DIR = "logs"
MERGE_SCRIPT = "merge.sbatch"

#: The snapshots of the user's code (``workload.path``) the runs imported: ``code/<digest>/``
#: (harness.contract.code.snapshot_user_code)
CODE_DIR = "code"

#: The folders of a results folder the harness writes in: never through a link (safe_paths)
FOLDERS = (CELLS_DIR, CONFLICTS_DIR, SUPERSEDED_DIR, PLOTS_DIR, DIAGNOSES_DIR, SLURM_DIR, CODE_DIR)

# ---------------------------------------------------------------- names and paths


def _stamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def default_out(name: str, now: dt.datetime | None = None) -> Path:
    return DEFAULT_RESULTS_ROOT / f"{name}-{_stamp(now)}"


def cell_dirname(name: str, cell_id: str) -> str:
    """A cell's folder name: ``<cell name>--<cell id>``."""
    return f"{name}{_CELL_SEPARATOR}{cell_id}"


def split_cell_dirname(dirname: str) -> tuple[str, str]:
    """(name, id) of a cell folder name."""
    name, _, cid = dirname.rpartition(_CELL_SEPARATOR)
    return name, cid


def cell_relpath(dirname: str) -> str:
    """A cell folder relative to the results folder, as the manifest records it."""
    return f"{CELLS_DIR}/{dirname}"


def cells_root(root: Path) -> Path:
    return Path(root) / CELLS_DIR


def repeat_dir(cell_dir: Path, repeat: int) -> Path:
    return Path(cell_dir) / f"{_REPEAT_PREFIX}{repeat}"


def run_dir(root: Path, dirname: str, repeat: int) -> Path:
    """``<root>/cells/<dirname>/repeat-<repeat>``."""
    return repeat_dir(cells_root(root) / dirname, repeat)


def repeat_of(path: Path) -> int | None:
    """k of a ``repeat-<k>`` folder; None for any other name."""
    number = path.name.removeprefix(_REPEAT_PREFIX)
    if number == path.name or not number.isdigit():
        return None
    return int(number)


def repeat_dirs(cell_dir: Path, repeats: int | None) -> list[tuple[int, Path]]:
    """(k, folder) of a cell's repeats: 0..repeats-1, or those found when ``repeats`` is None."""
    if repeats is not None:
        return [(k, repeat_dir(cell_dir, k)) for k in range(repeats)]
    found = (repeat_of(p) for p in Path(cell_dir).glob(f"{_REPEAT_PREFIX}*"))
    return [(k, repeat_dir(cell_dir, k)) for k in sorted(k for k in found if k is not None)]


def run_dirs(root: Path) -> Iterator[tuple[str, int, Path]]:
    """(cell folder name, repeat, folder) of every run folder under ``<root>/cells``, sorted."""
    pattern = f"*{_CELL_SEPARATOR}*/{_REPEAT_PREFIX}*"
    for path in sorted(cells_root(root).glob(pattern)):
        repeat = repeat_of(path)
        if repeat is not None and path.is_dir():
            yield path.parent.name, repeat, path


def record_paths(root: Path) -> list[Path]:
    """Every run record under ``<root>/cells``, sorted (for a folder without a manifest)."""
    return sorted(cells_root(root).glob(f"*/{_REPEAT_PREFIX}*/{RECORD_FILE}"))


def conflict_run_dir(out: Path, k: int, input_name: str, dirname: str, repeat: int) -> Path:
    """Where ``harness merge`` keeps the other copy of a run: the ``k``-th input's (1-based)."""
    return run_dir(Path(out) / CONFLICTS_DIR / f"{k}-{input_name}", dirname, repeat)


def new_superseded_dir(root: Path, now: dt.datetime | None = None) -> Path:
    """A folder that does not exist yet for the runs one ``harness run`` sets aside:
    ``<root>/superseded/<UTC time>`` (``-2``, ``-3``, ... when that time is taken)."""
    base = Path(root) / SUPERSEDED_DIR
    stamp = _stamp(now)
    path, n = base / stamp, 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{n}"
    return path


def superseded_run_dir(superseded: Path, dirname: str, repeat: int) -> Path:
    """Where a run set aside into ``superseded`` (from ``new_superseded_dir``) goes, under the
    same ``cells/<dirname>/repeat-<repeat>`` it had in the results folder."""
    return run_dir(superseded, dirname, repeat)


def report_path(root: Path, fmt: str) -> Path:
    return Path(root) / REPORT_FILES[fmt]


def plots_dir(root: Path) -> Path:
    return Path(root) / PLOTS_DIR


def code_store(root: Path) -> Path:
    """``<root>/code``: the snapshots of the user's code, one ``<digest>/`` folder each."""
    return Path(root) / CODE_DIR


# ---------------------------------------------------------------- merge conflict copies


def conflict_copies(root: Path, dirname: str) -> list[tuple[str, int, Path]]:
    """(``<k>-<input>`` folder name, repeat, folder) of every copy of a run of the cell folder
    ``dirname`` that ``harness merge`` kept under ``<root>/conflicts/`` (``conflict_run_dir``),
    by repeat, then by input order."""
    import glob

    def order(item: tuple[str, int, Path]) -> tuple[int, int, str]:
        source, repeat, _ = item
        k = source.partition("-")[0]
        return repeat, int(k) if k.isdigit() else 0, source

    pattern = f"*/{CELLS_DIR}/{glob.escape(dirname)}/{_REPEAT_PREFIX}*"
    found = []
    for path in (Path(root) / CONFLICTS_DIR).glob(pattern):
        repeat = repeat_of(path)
        if repeat is not None and path.is_dir():
            found.append((path.parents[2].name, repeat, path))
    return sorted(found, key=order)


# ---------------------------------------------------------------- harness submit slurm


def slurm_dir(root: Path) -> Path:
    return Path(root) / SLURM_DIR


def submission_path(root: Path) -> Path:
    return slurm_dir(root) / SUBMISSION_FILE


def shard_results_dir(root: Path, index: int) -> Path:
    """The results folder of array task (shard) ``index``: ``<root>/slurm/shards/shard-<i>``."""
    return slurm_dir(root) / SHARDS_DIR / f"shard-{index}"


def array_script(root: Path, group: int) -> Path:
    """The batch script of the ``group``-th job array (one per distinct resource request)."""
    return slurm_dir(root) / f"array-{group}.sbatch"


def merge_script(root: Path) -> Path:
    return slurm_dir(root) / MERGE_SCRIPT


def slurm_logs_dir(root: Path) -> Path:
    return slurm_dir(root) / SLURM_LOGS_DIR


def shard_log_pattern(root: Path) -> str:
    """sbatch's ``--output`` of an array task: Slurm fills in ``%a`` (the shard) and ``%A`` (the
    array's job id); a ``%`` of the folder's own name is doubled, so Slurm keeps it."""
    return f"{str(slurm_logs_dir(root)).replace('%', '%%')}/shard-%a-job%A.out"


def merge_log_pattern(root: Path) -> str:
    return f"{str(slurm_logs_dir(root)).replace('%', '%%')}/merge-job%j.out"


def shard_log(root: Path, index: int, array_job: str) -> Path:
    """The log file Slurm wrote for shard ``index`` of array ``array_job``."""
    return slurm_logs_dir(root) / f"shard-{index}-job{array_job}.out"


def merge_staging_dir(root: Path, tag: str) -> Path:
    """Where the merge job writes before the merged results replace the folder's old ones."""
    return slurm_dir(root) / f"merging-{tag}"


def merge_replaced_dir(root: Path, tag: str) -> Path:
    return slurm_dir(root) / f"replaced-{tag}"
