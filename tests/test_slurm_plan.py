"""What ``harness submit slurm`` asks Slurm for, checked without a Slurm: the resources of each
array (GPUs and CPUs from the cells, the time from ``timeout_s`` and the runs), the options of
the ``slurm:`` section and the command line, the dry run, and the refusals."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.matrix import load_matrix, parse_matrix
from harness.results import layout
from harness.run.schedule import need_of
from harness.run.shard import ShardSpec, cells_of_shard, plan_shards
from harness.slurm import submission
from harness.slurm.batch_scripts import SlurmRequest, array_groups, array_spec, slurm_time
from harness.slurm.submit import check_folder, prepare, resolve_request
from harness.slurm.task import gpu_option, replace_merged, shard_argv

ROOT = Path(__file__).resolve().parents[1]
GPU_MATRIX = ROOT / "matrix.yaml"
QUICK = ROOT / "examples" / "placement-quick.yaml"

MIXED = """\
name: mixed-gpus
run: {repeats: 3, epochs: 1, max_steps_per_epoch: 10, threads: 2, timeout_s: 100}
axes:
  image: [local]
  accelerator: [gpu]
  devices: [1, 2, 4]
  placement: [before_model]
"""


def write(tmp_path: Path, text: str, name: str = "matrix.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def request(**kw) -> SlurmRequest:
    return SlurmRequest(python="/usr/bin/python3", **kw)


def dry_run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["submit", "slurm", *args, "--dry-run"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def scripts_of(out: str) -> dict[str, str]:
    """The dry run's scripts by file name."""
    found = {}
    for block in out.split("\n# ---- ")[1:]:
        head, _, body = block.partition("\n")
        if head.endswith(".sbatch"):
            found[Path(head).name] = body
    return found


# ---------------------------------------------------------------- pure pieces


def test_array_lists_and_time_limits_are_written_as_sbatch_reads_them():
    assert array_spec([5, 1, 2, 3]) == "1-3,5"
    assert array_spec([2]) == "2"
    assert array_spec([1, 3, 4, 7, 8, 9]) == "1,3-4,7-9"
    assert slurm_time(59) == "00:01:00"
    assert slurm_time(3600) == "01:00:00"
    assert slurm_time(3601) == "01:01:00"  # up to a whole minute, never down
    assert slurm_time(86400 + 61) == "1-00:02:00"


def test_each_task_asks_for_the_gpus_and_cores_of_its_largest_cell(tmp_path: Path):
    """Shards of 1-, 2- and 4-GPU cells go to three arrays, each asking for what its cells need
    (threads x devices cores), and the time for every repeat run to its timeout one after the
    other when the cores allow no two side by side."""
    matrix = load_matrix(write(tmp_path, MIXED))
    groups = array_groups(matrix, plan_shards(matrix, 3), request(), "local")
    assert [(g.gpus, g.cpus) for g in groups] == [(1, 2), (2, 4), (4, 8)]
    assert all(len(g.shards) == 1 for g in groups)
    # 600 s of setup + 3 repeats x 100 s each
    assert {g.time for g in groups} == {slurm_time(600 + 300)}
    assert {g.runs for g in groups} == {3}


def test_more_cpus_let_runs_go_side_by_side_and_shorten_the_limit(tmp_path: Path):
    matrix = load_matrix(write(tmp_path, MIXED.replace("devices: [1, 2, 4]", "devices: [1]")))
    one = array_groups(matrix, plan_shards(matrix, 1), request(), "local")[0]
    # 6 CPUs for runs of 2 cores: 3 side by side, but the task has 1 GPU for 1-GPU runs
    six = array_groups(matrix, plan_shards(matrix, 1), request(cpus_per_task=6), "local")[0]
    assert (one.cpus, six.cpus) == (2, 6)
    assert one.time == six.time == slurm_time(600 + 300)
    cpu = load_matrix(write(tmp_path, MIXED.replace("[gpu]", "[cpu]").replace("[1, 2, 4]", "[1]")))
    wide = array_groups(cpu, plan_shards(cpu, 1), request(cpus_per_task=6), "docker")[0]
    assert (wide.gpus, wide.time) == (0, slurm_time(1800 + 100))
    with pytest.raises(HarnessError, match="fewer than the 2 cores") as caught:
        array_groups(cpu, plan_shards(cpu, 1), request(cpus_per_task=1), "local")
    assert caught.value.hint == "ask for at least 2, or lower the cells' threads"


def test_one_thread_runs_share_a_two_cpu_task_two_at_a_time(tmp_path: Path):
    text = (
        MIXED.replace("[gpu]", "[cpu]")
        .replace("[1, 2, 4]", "[1]")
        .replace("threads: 2", "threads: 1")
    )
    matrix = load_matrix(write(tmp_path, text))
    one = array_groups(matrix, plan_shards(matrix, 1), request(), "local")[0]
    two = array_groups(matrix, plan_shards(matrix, 1), request(cpus_per_task=2), "local")[0]
    assert (one.cpus, one.time) == (1, slurm_time(600 + 3 * 100))
    assert (two.cpus, two.time) == (2, slurm_time(600 + 2 * 100))  # 3 repeats: 2 rounds
    two_threads = load_matrix(write(tmp_path, text.replace("threads: 1", "threads: 2"), "t.yaml"))
    three = array_groups(
        two_threads, plan_shards(two_threads, 1), request(cpus_per_task=3), "local"
    )
    assert three[0].time == slurm_time(600 + 3 * 100)  # 3 CPUs hold one 2-thread run at a time


def test_a_cell_needing_3_of_a_tasks_4_gpus_runs_its_repeats_one_at_a_time(tmp_path: Path):
    text = MIXED.replace("[1, 2, 4]", "[3, 4]").replace("threads: 2", "threads: 1")
    matrix = load_matrix(write(tmp_path, text.replace("repeats: 3", "repeats: 4")))
    (group,) = array_groups(matrix, plan_shards(matrix, 1), request(cpus_per_task=12), "local")
    assert (group.gpus, group.cpus) == (4, 12)
    assert group.time == slurm_time(600 + 4 * 100 + 4 * 100)  # never two 3-GPU runs at once


def test_an_explicit_time_limit_replaces_the_worst_case(tmp_path: Path):
    matrix = load_matrix(write(tmp_path, MIXED))
    groups = array_groups(matrix, plan_shards(matrix, 3), request(time="2:00:00"), "local")
    assert {g.time for g in groups} == {"2:00:00"}


def test_the_slurm_section_changes_neither_the_matrix_digest_nor_the_cells(tmp_path: Path):
    plain = parse_matrix(QUICK.read_text(), QUICK)
    text = QUICK.read_text() + "slurm: {partition: gpu, time: '4:00:00', sbatch: [--mem=8G]}\n"
    with_slurm = parse_matrix(text, QUICK)
    assert with_slurm.model.slurm.partition == "gpu"
    assert with_slurm.digest == plain.digest
    assert [c.id for c in with_slurm.cells] == [c.id for c in plain.cells]


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("partitoin: gpu", "unknown key 'partitoin' in slurm"),
        ("partition: 'gpu a'", "slurm.partition"),
        ("time: soon", "slurm.time"),
        ("sbatch: ['--mem=8G --wrap=x']", "slurm.sbatch"),
        ("cpus_per_task: 0", "slurm.cpus_per_task"),
    ],
)
def test_a_bad_slurm_section_names_the_file_and_line(tmp_path: Path, entry: str, says: str):
    path = write(tmp_path, QUICK.read_text() + f"slurm:\n  {entry}\n")
    line = len(QUICK.read_text().splitlines()) + 2
    with pytest.raises(HarnessError) as caught:
        load_matrix(path)
    assert f"{path}:{line}" in caught.value.message
    assert says in caught.value.message


# ---------------------------------------------------------------- options


def test_command_line_options_override_the_slurm_section(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("HARNESS_MNIST_DIR", raising=False)
    text = QUICK.read_text() + (
        "slurm: {partition: cpu, account: lab, sbatch: [--mem=8G], data_dir: data/mnist}\n"
    )
    matrix = load_matrix(write(tmp_path, text))
    from_file = resolve_request(matrix, {}, None)
    assert (from_file.partition, from_file.account, from_file.sbatch) == (
        "cpu",
        "lab",
        ("--mem=8G",),
    )
    assert from_file.data_dir == str(tmp_path / "data" / "mnist")  # relative to the matrix
    assert from_file.python == sys.executable
    given = resolve_request(
        matrix, {"partition": "gpu", "sbatch": ["--mem=16G"]}, Path("/shared/mnist")
    )
    assert (given.partition, given.account, given.sbatch) == ("gpu", "lab", ("--mem=16G",))
    assert given.data_dir == "/shared/mnist"


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"sbatch": ["--time=1:00:00"]}, "use slurm.time"),
        ({"sbatch": ["--array=1-3"]}, "one task per shard"),
        ({"sbatch": ["--gres=gpu:8"]}, "the GPU count comes from the cells"),
        ({"sbatch": ["--mem 8G"]}, "--sbatch-option (slurm.sbatch.0)"),
        ({"partition": "gpu\n#SBATCH --wrap=x"}, "--partition (slurm.partition)"),
        ({"python": "relative/python"}, "absolute path"),
        ({"python": "/opt/my venv/bin/python"}, "absolute path without blanks"),
        ({"executor": "apptainer"}, "--executor (slurm.executor)"),
    ],
)
def test_options_that_would_change_the_script_are_refused(overrides, says):
    matrix = parse_matrix(QUICK.read_text(), QUICK)
    with pytest.raises(HarnessError) as caught:
        resolve_request(matrix, overrides, None)
    assert says in str(caught.value)


# ---------------------------------------------------------------- the dry run


def test_the_dry_run_of_matrix_yaml_asks_each_array_for_its_cells_gpus(capsys, tmp_path):
    """The repository's GPU matrix, checked without a GPU: every shard's array asks for the
    most GPUs (and cores) one of that shard's cells needs, and every shard is in one array."""
    out = tmp_path / "sub"
    code, text, _ = dry_run(capsys, str(GPU_MATRIX), "--shards", "6", "--out", str(out))
    assert code == 0
    assert not out.exists()  # nothing written
    matrix = load_matrix(GPU_MATRIX)
    scripts = scripts_of(text)
    arrays = re.findall(r"--array=(\S+) .*?(array-\d+\.sbatch)", text)
    assert arrays, text
    covered = []
    for spec, script_name in arrays:
        script = scripts[script_name]
        gres = re.search(r"^#SBATCH --gres=gpu:(\d+)$", script, re.M)
        cpus = re.search(r"^#SBATCH --cpus-per-task=(\d+)$", script, re.M)
        assert gres and cpus, script
        for part in spec.split(","):
            low, _, high = part.partition("-")
            for index in range(int(low), int(high or low) + 1):
                cells = cells_of_shard(matrix, ShardSpec(index, 6))
                needs = [need_of(c.spec(0)) for c in cells]
                assert int(gres.group(1)) == max(n.gpus for n in needs), (index, script)
                assert int(cpus.group(1)) == max(n.cores for n in needs), (index, script)
                covered.append(index)
    assert sorted(covered) == [1, 2, 3, 4, 5, 6]
    merge = scripts["merge.sbatch"]
    assert "--gres" not in merge and "#SBATCH --cpus-per-task=1" in merge


def test_the_dry_run_splits_arrays_by_gpu_count_and_chains_the_merge(capsys, tmp_path):
    path = write(tmp_path, MIXED)
    code, text, _ = dry_run(
        capsys, str(path), "--shards", "3", "--out", str(tmp_path / "o"), "--partition", "gpu"
    )
    assert code == 0
    scripts = scripts_of(text)
    assert sorted(scripts) == ["array-1.sbatch", "array-2.sbatch", "array-3.sbatch", "merge.sbatch"]
    for k, gpus in ((1, 1), (2, 2), (3, 4)):
        assert f"#SBATCH --gres=gpu:{gpus}\n" in scripts[f"array-{k}.sbatch"]
    assert all("#SBATCH --partition=gpu\n" in s for s in scripts.values())
    merge_line = text.strip().splitlines()[-1]
    assert merge_line.startswith("sbatch --parsable '--dependency=afterany:<job id of array 1>:")
    assert merge_line.endswith("merge.sbatch")


def test_the_dry_run_shows_the_exact_sbatch_lines_and_job_names(capsys, tmp_path):
    out = tmp_path / "sub"
    code, text, _ = dry_run(
        capsys, str(QUICK), "--shards", "2", "--out", str(out), "--gpu-type", "a100"
    )
    assert code == 0
    logs = layout.slurm_logs_dir(out)
    lines = text.strip().splitlines()
    assert lines[-2] == (
        f"sbatch --parsable --array=1-2 --output={logs}/shard-%a-job%A.out "
        f"{out}/slurm/array-1.sbatch"
    )
    assert lines[-1] == (
        "sbatch --parsable '--dependency=afterany:<job id of array 1>' "
        f"--output={logs}/merge-job%j.out {out}/slurm/merge.sbatch"
    )
    scripts = scripts_of(text)
    assert "#SBATCH --job-name=harness-placement-quick\n" in scripts["array-1.sbatch"]
    assert "#SBATCH --job-name=harness-placement-quick-merge\n" in scripts["merge.sbatch"]
    assert "--gres" not in scripts["array-1.sbatch"]  # CPU cells: no GPU, whatever the type
    gpu = load_matrix(write(tmp_path, MIXED))
    group = array_groups(gpu, plan_shards(gpu, 3), request(gpu_type="a100"), "local")[1]
    from harness.slurm.batch_scripts import array_script, merge_argv

    script = array_script(request(gpu_type="a100"), group, "m", 3, out)
    assert "#SBATCH --gres=gpu:a100:2\n" in script
    # a resubmission with every shard done: the merge job alone, waiting for nothing
    assert merge_argv(out, []) == [
        "sbatch", "--parsable", f"--output={logs}/merge-job%j.out", str(out / "slurm/merge.sbatch")
    ]  # fmt: skip


def test_the_scripts_of_the_quick_matrix_word_for_word(capsys, tmp_path):
    """What a user reads before submitting: the whole of both scripts."""
    out = tmp_path / "sub"
    code, text, _ = dry_run(capsys, str(QUICK), "--shards", "2", "--out", str(out), "--qos", "hi")
    assert code == 0
    scripts = scripts_of(text)
    tail = "# Submit it again with harness submit slurm (it knows which shards are left).\n"
    tail += "import sys\n\nfrom harness.cli.slurm_task import main\n\n"
    assert scripts["array-1.sbatch"] == (
        f"#!{sys.executable}\n"
        "#SBATCH --job-name=harness-placement-quick\n"
        "#SBATCH --qos=hi\n"
        "#SBATCH --nodes=1\n"
        "#SBATCH --ntasks=1\n"
        "#SBATCH --cpus-per-task=1\n"
        "#SBATCH --time=01:10:00\n"
        "# Written by harness submit slurm: one shard of the 2 of matrix placement-quick per "
        "array task, the task id being the shard (1 CPU, no GPU, time limit 01:10:00 per task; "
        "up to 4 runs per task).\n" + tail + f'sys.exit(main("shard", "{out}"))\n'
    )
    assert scripts["merge.sbatch"] == (
        f"#!{sys.executable}\n"
        "#SBATCH --job-name=harness-placement-quick-merge\n"
        "#SBATCH --qos=hi\n"
        "#SBATCH --nodes=1\n"
        "#SBATCH --ntasks=1\n"
        "#SBATCH --cpus-per-task=1\n"
        "#SBATCH --time=1:00:00\n"
        f"# Written by harness submit slurm: merge the shards of matrix placement-quick into "
        f'"{out}" and write its report.\n' + tail + f'sys.exit(main("merge", "{out}"))\n'
    )


def test_the_batch_script_is_python_whose_only_input_is_a_literal(capsys, tmp_path):
    """A folder name that a shell would read as code is, in the script, one JSON string."""
    out = tmp_path / "a b'$(touch pwned)\";x"
    code, text, _ = dry_run(capsys, str(QUICK), "--shards", "2", "--out", str(out))
    assert code == 0
    script = scripts_of(text)["array-1.sbatch"]
    assert script.startswith(f"#!{sys.executable}\n")
    last = script.strip().splitlines()[-1]
    assert last.startswith('sys.exit(main("shard", ')
    namespace: dict = {}
    exec(compile(last.replace("sys.exit(main", "found = ("), "script", "exec"), namespace)
    assert namespace["found"] == ("shard", str(out))
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- the folder


def test_a_folder_that_is_not_a_submission_is_refused_untouched(tmp_path: Path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(HarnessError, match="not a folder harness submit slurm wrote"):
        check_folder(folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def _record(matrix, shards: int) -> submission.Submission:
    return submission.Submission(
        matrix=str(matrix.path),
        matrix_name=matrix.model.name,
        matrix_digest=matrix.digest,
        shards=shards,
        executor="auto",
        python=sys.executable,
        data_dir=None,
    )


def test_a_resubmission_keeps_the_matrix_and_the_shard_count(tmp_path: Path):
    quick = load_matrix(QUICK)
    out = tmp_path / "sub"
    submission.write(out, _record(quick, 2))
    with pytest.raises(HarnessError, match="submitted in 2 shards"):
        prepare(quick, out, 3, request())
    assert prepare(quick, out, None, request()).total == 2  # the earlier count by default
    other = load_matrix(write(tmp_path, QUICK.read_text().replace("seed: 201014", "seed: 7")))
    with pytest.raises(HarnessError, match="submitted for another matrix"):
        prepare(other, out, 2, request())


def test_a_damaged_submission_record_is_a_clear_error(tmp_path: Path):
    layout.slurm_dir(tmp_path).mkdir(parents=True)
    layout.submission_path(tmp_path).write_text("{not json")
    with pytest.raises(HarnessError, match="cannot be read as harness submit slurm's record"):
        submission.read(tmp_path)


def test_the_shard_task_runs_its_shard_into_its_own_folder(tmp_path: Path):
    quick = load_matrix(QUICK)
    record = _record(quick, 2)
    record.data_dir = "/shared/mnist"
    argv = shard_argv(tmp_path, record, 2, "local")
    assert argv[:4] == ["run", str(QUICK), "--shard", "2/2"]
    assert argv[argv.index("--out") + 1] == str(layout.shard_results_dir(tmp_path, 2))
    assert argv[argv.index("--data-dir") + 1] == "/shared/mnist"
    assert argv[argv.index("--python") + 1] == sys.executable


def test_containers_get_the_hosts_gpu_ids_local_runs_slurms_visible_devices():
    env = {"SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert gpu_option("docker", env) == ["--gpus", "2,3"]
    assert gpu_option("local", env) == []  # harness run reads CUDA_VISIBLE_DEVICES itself
    assert gpu_option("docker", {"CUDA_VISIBLE_DEVICES": "0"}) == []


def test_a_new_merge_replaces_the_old_merged_results_and_keeps_the_rest(tmp_path: Path):
    """Only what a merge writes is replaced (docs/slurm.md): the submission, the diagnoses made
    of the merged results, the results lock and a file of the user's stay as they were."""
    root = tmp_path / "sub"
    (root / "slurm" / "shards").mkdir(parents=True)
    (root / "slurm" / "shards" / "kept").write_text("shard")
    (root / "report.md").write_text("old")
    (root / "plots").mkdir()
    (root / "plots" / "old.png").write_text("old")
    (root / "cells").mkdir()
    (root / "cells" / "old-cell").write_text("old")
    (root / "diagnoses" / "a-0--a-1").mkdir(parents=True)
    (root / "diagnoses" / "a-0--a-1" / "diagnosis.json").write_text("{}")
    (root / ".lock").write_text("123")
    (root / "notes.txt").write_text("mine")
    staging = root / "slurm" / "merging-1"
    (staging / "cells").mkdir(parents=True)
    (staging / "report.md").write_text("new")
    (staging / ".lock").write_text("")
    replace_merged(root, staging, root / "slurm" / "replaced-1")
    assert sorted(p.name for p in root.iterdir()) == [
        ".lock",
        "cells",
        "diagnoses",
        "notes.txt",
        "report.md",
        "slurm",
    ]
    assert (root / "report.md").read_text() == "new"
    assert list((root / "cells").iterdir()) == []
    assert sorted(p.name for p in (root / "slurm").iterdir()) == ["shards"]
    assert (root / "slurm" / "shards" / "kept").read_text() == "shard"
    assert (root / "diagnoses" / "a-0--a-1" / "diagnosis.json").read_text() == "{}"
    assert (root / ".lock").read_text() == "123"
    assert (root / "notes.txt").read_text() == "mine"


def test_the_merge_job_takes_the_results_lock_and_keeps_the_diagnoses(tmp_path: Path, capsys):
    """The merge job holds ``<out>``'s results lock (``harness run``'s and ``harness
    diagnose``'s) while it replaces the merged results: held by another process, the merge is
    refused naming its pid and nothing moves (``.lock`` included); once free, the merge (and a
    second one) replace the merged results and keep ``diagnoses/``. Real shards (the fake
    executor), a real lock held by another process."""
    from harness.cli.slurm_task import main as task_main
    from harness.executors.fake import FakeExecutor
    from harness.run.matrix_runner import RunConfig, run_matrix

    quick = load_matrix(QUICK)
    root = tmp_path / "sub"
    for index in (1, 2):
        out = layout.shard_results_dir(root, index)
        config = RunConfig(matrix=quick, out=out, progress="quiet", formats=(),
                           shard=ShardSpec(index, 2))  # fmt: skip
        run_matrix(config, FakeExecutor(seconds=0.0))
    submission.write(root, _record(quick, 2))
    diagnosis = root / "diagnoses" / "a-0--a-1" / "diagnosis.json"
    diagnosis.parent.mkdir(parents=True)
    diagnosis.write_text("{}")
    holder = subprocess.Popen(  # argv list
        [sys.executable, "-c", "import sys, time\n"
         "from harness.results.store import ResultsDir\n"
         "held = ResultsDir(sys.argv[1]); held.lock(); print('locked', flush=True)\n"
         "time.sleep(120)",
         str(root)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = sorted(p.name for p in root.iterdir())
        assert task_main("merge", str(root)) == 2
        err = capsys.readouterr().err
        assert f"in use by harness pid {holder.pid}" in err and "hint:" in err, err
        assert sorted(p.name for p in root.iterdir()) == before  # nothing merged, nothing moved
        assert (root / layout.LOCK_FILE).read_text() == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    for _ in range(2):  # the first merge, then one that replaces it
        assert task_main("merge", str(root)) == 0, capsys.readouterr().err
        assert (root / layout.MANIFEST_FILE).is_file() and (root / "report.md").is_file()
        assert diagnosis.read_text() == "{}"
        assert not list((root / "slurm").glob("merging-*"))
        assert not list((root / "slurm").glob("replaced-*"))


def test_without_slurm_commands_submit_says_what_is_missing(tmp_path: Path):
    """No sbatch on PATH: exit 2, the missing command named, no traceback, nothing submitted."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "submit", "slurm", str(QUICK), "--shards", "2"]
        + ["--out", str(tmp_path / "sub")],
        env={"PATH": str(tmp_path), "HARNESS_MNIST_DIR": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "sbatch not found on PATH" in proc.stderr
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sub").exists()  # nothing written


def test_a_task_refuses_a_matrix_changed_since_submission(tmp_path: Path, monkeypatch, capsys):
    """The nodes read the matrix from its path: edited after submission, a task runs nothing
    and says why (exit 2) instead of running cells the folder was not made for."""
    from harness.cli.slurm_task import main as task_main

    path = write(tmp_path, QUICK.read_text())
    record = _record(load_matrix(path), 2)
    root = tmp_path / "sub"
    submission.write(root, record)
    path.write_text(QUICK.read_text().replace("seed: 201014", "seed: 7"))
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert task_main("shard", str(root)) == 2
    err = capsys.readouterr().err
    assert f"error: {path} changed since it was submitted into {root}" in err
    assert not layout.shard_results_dir(root, 1).exists()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    path.write_text(QUICK.read_text())
    assert task_main("shard", str(root)) == 2
    assert "SLURM_ARRAY_TASK_ID is '3', not a shard of 1 to 2" in capsys.readouterr().err


# ---------------------------------------------------------------- the words a user reads


def refusal(req: SlurmRequest) -> HarnessError:
    with pytest.raises(HarnessError) as caught:
        req.check()
    return caught.value


def test_a_python_that_cannot_be_a_shebang_is_refused_in_so_many_words():
    err = refusal(SlurmRequest(python="venv/bin/python"))
    assert err.message == (
        "slurm.python 'venv/bin/python' cannot be a batch script's #! line: it must be an "
        "absolute path without blanks"
    )
    assert err.hint == (
        "give the nodes' Python as such a path (a symbolic link without blanks will do): "
        "--python /shared/venv/bin/python"
    )
    assert refusal(SlurmRequest(python="/opt/my venv/python")).message.startswith(
        "slurm.python '/opt/my venv/python' cannot be"
    )
    SlurmRequest(python="/opt/venv/bin/python", sbatch=("--mem=16G", "--exclusive")).check()


def test_an_extra_sbatch_option_is_refused_with_why_and_what_to_do():
    bad = refusal(request(sbatch=("--mem=16G", "--mem 8G")))
    assert bad.message == "extra sbatch option '--mem 8G' is not one --name or --name=value"
    assert bad.hint == "write each option as --name=value, without blanks or quotes, e.g. --mem=16G"
    own = refusal(request(sbatch=("--gpus-per-node=2",)))
    assert (
        own.message == "extra sbatch option '--gpus-per-node=2': the GPU count comes from the cells"
    )
    assert own.hint == "remove --gpus-per-node from slurm.sbatch (or --sbatch-option)"
    # the option's name ends at its first "=", whatever its value holds
    twice = refusal(request(sbatch=("--time=1:00:00=x",)))
    assert twice.message == "extra sbatch option '--time=1:00:00=x': use slurm.time (or --time)"
    flag = refusal(request(sbatch=("--parsable",)))
    assert flag.message == "extra sbatch option '--parsable': the harness sets it"
    assert flag.hint == "remove --parsable from slurm.sbatch (or --sbatch-option)"


def test_an_array_s_request_in_words_counts_cpus_and_gpus():
    from harness.slurm.batch_scripts import ArrayGroup, resources

    def words(cpus: int, gpus: int) -> str:
        return resources(ArrayGroup(1, (0,), cpus=cpus, gpus=gpus, time="02:00:00", runs=3))

    assert words(1, 0) == "1 CPU, no GPU, time limit 02:00:00 per task"
    assert words(1, 1) == "1 CPU, 1 GPU, time limit 02:00:00 per task"
    assert words(8, 4) == "8 CPUs, 4 GPUs, time limit 02:00:00 per task"


def test_a_control_character_in_an_option_is_refused_with_the_option_named():
    from harness.slurm.batch_scripts import has_controls

    err = refusal(SlurmRequest(python="/usr/bin/python3\x1b[31m"))
    assert err.message == (
        "slurm.python '/usr/bin/python3\\x1b[31m' holds a control character: a batch script "
        "line must be printable, and the dry run would show it to your terminal"
    )
    assert err.hint == "remove it from slurm.python (or the command-line option that set it)"
    err = refusal(request(sbatch=("--mem=16G", "--comment=a\u202eb")))
    assert err.message.startswith("slurm.sbatch '--comment=a\\u202eb' holds a control character")
    assert err.hint == "remove it from slurm.sbatch (or the command-line option that set it)"
    assert has_controls("a\nb") and has_controls("\x07") and not has_controls("/opt/é/python")


def test_a_script_line_that_would_break_is_refused_in_words(tmp_path: Path):
    from harness.slurm.batch_scripts import merge_script

    with pytest.raises(HarnessError) as caught:
        merge_script(request(qos="q\x1b[2J"), "m", tmp_path)
    assert caught.value.message == (
        'a batch script line would hold a control character: "#SBATCH --qos=q\\u001b[2J"'
    )
    assert caught.value.hint == "remove it from the slurm options, the matrix name or --out"


def test_the_results_folder_is_an_ascii_literal_in_the_scripts(tmp_path: Path):
    """A folder name outside ASCII is written escaped: the script is plain ASCII whatever the
    node's locale, and reads back as the same path."""
    from harness.slurm.batch_scripts import merge_script

    root = tmp_path / "résultats"
    script = merge_script(request(), "m", root)
    assert script.isascii()
    escaped = json.dumps(str(root))
    assert f"into {escaped} and write its report." in script
    assert script.endswith(f'sys.exit(main("merge", {escaped}))\n')
