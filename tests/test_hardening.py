"""Hardening: no command is ever built as a shell string, and user text in the report cannot
break a Markdown table or inject HTML or links.

Containers (cap_drop ALL, no-new-privileges, read-only root with a tmpfs /tmp, a pids limit, no
network) are checked on a live container in test_docker_executor.py
(test_live_container_is_hardened_and_cancel_aborts); the workflows by zizmor in
test_workflows.py (test_zizmor_finds_nothing_of_medium_severity_or_above).
"""

from __future__ import annotations

import ast
import json
import re
import tarfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.executors.fake import write_fake_record
from harness.matrix import parse_matrix
from harness.report import write_reports
from harness.report.markdown_blocks import escape
from harness.results.store import ResultsDir, record_failure

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("harness", "tests", "benchmarks", "scripts", "docker", "examples")

SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}
#: Calls that always go through a shell, whatever their arguments.
SHELL_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("asyncio", "create_subprocess_shell"),
}


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _is_string_expr(node: ast.AST) -> bool:
    """A str literal, an f-string, a concatenation or .format()/% of one: a command line."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return _is_string_expr(node.left)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr in ("format", "join") and _is_string_expr(node.func.value)
    return False


def shell_uses(source: str, filename: str) -> list[str]:
    """Every place in ``source`` that runs a command through a shell or as one string."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno}"
        for kw in node.keywords:
            if kw.arg == "shell" and not (
                isinstance(kw.value, ast.Constant) and kw.value.value is False
            ):
                found.append(f"{where}: shell={ast.unparse(kw.value)}")
        if name[-2:] in SHELL_CALLS or (len(name) == 1 and (("os",) + name) in SHELL_CALLS):
            found.append(f"{where}: {'.'.join(name)}() runs a shell")
        if name and name[-1].startswith("spawn") and name[0] == "os":
            found.append(f"{where}: {'.'.join(name)}()")
        is_subprocess = len(name) >= 2 and name[-2] == "subprocess"
        if is_subprocess and name[-1] in SUBPROCESS_CALLS:
            command = node.args[0] if node.args else None
            command = command or next((k.value for k in node.keywords if k.arg == "args"), None)
            if command is not None and _is_string_expr(command):
                found.append(f"{where}: {'.'.join(name)}() given a string command")
        if name and name[-1] in ("create", "run", "exec_run"):  # docker SDK containers
            for kw in node.keywords:
                if kw.arg in ("command", "entrypoint", "cmd") and _is_string_expr(kw.value):
                    found.append(f"{where}: {kw.arg}= given a string")
    return found


def python_files() -> list[Path]:
    files = []
    for top in SCANNED:
        files += [p for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


def test_the_scanner_catches_each_kind_of_shell_use():
    bad = """
import os, subprocess, asyncio
os.system("ls " + user)
os.popen(f"cat {path}")
subprocess.run("ls -l", shell=True)
subprocess.Popen(["ls"], shell=flag)
subprocess.check_output(f"git log {ref}")
subprocess.call("rm -rf %s" % path)
subprocess.getoutput("id")
asyncio.create_subprocess_shell(cmd)
client.containers.run(image, command=f"python {script}")
os.spawnlp(os.P_WAIT, "ls", "ls")
"""
    found = shell_uses(bad, "bad.py")
    flagged = {int(f.split(":")[1]) for f in found}
    assert flagged == set(range(3, 13)), "\n".join(found)  # every bad line, lines 3 to 12
    good = """
import subprocess
subprocess.run(["ls", path], check=False, shell=False)
subprocess.Popen(argv)
client.containers.create(image, command=["--spec", "/out/spec.json"])
"""
    assert shell_uses(good, "good.py") == []


def test_no_command_is_built_as_a_shell_string():
    files = python_files()
    assert len(files) > 40 and any(p.name == "docker.py" for p in files)
    found = [f for p in files for f in shell_uses(p.read_text(), str(p.relative_to(ROOT)))]
    assert found == [], "\n".join(found)


def test_a_users_requirement_never_enters_a_shell_line():
    """``einops>=0.8`` in a RUN line would be a redirection: the requirements travel as a file
    in the build context that pip reads with -r, never as a build argument."""
    from harness.executors import images

    wanted = ["einops>=0.8", "a[b,c]<2,>=1"]
    kwargs = images.build_kwargs(
        base="b:1", tag="t:1", digest="d", base_digest="sha256:x", wheelhouse_url=None
    )
    assert not any(">" in str(v) for v in kwargs["buildargs"].values())
    recipe = (images.source_root() / images.DOCKERFILE).read_text()
    block = recipe.split("COPY harness-user-requirements.txt", 1)[1].split("COPY harness/")[0]
    assert re.findall(r"\$\{?(\w+)", block) == ["PIP_INSTALL_ARGS"]  # the harness's own
    with tarfile.open(fileobj=images.build_context(requirements=wanted)) as tar:
        member = tar.extractfile(images.REQUIREMENTS_FILE)
        assert member is not None and member.read().decode().splitlines() == sorted(wanted)


# --- escaping -------------------------------------------------------------------------------

EVIL = [
    "a|b",
    "`code`",
    "<script>alert(1)</script>",
    "[x](javascript:alert(1))",
    "![i](http://e/x.png)",
    "line1\nline2\r\n| injected | row |",
    "<img src=x onerror=alert(1)>",
    "*bold* _it_ ~~s~~ # h",
    "&lt;already&gt;",
]
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def cells_of(row: str) -> int:
    return len(UNESCAPED_PIPE.findall(row))


def test_report_escapes_image_names_and_error_messages(tmp_path: Path):
    """A results folder whose image names and error messages are hostile (run records can be
    written by anything): the Markdown table keeps its shape, no HTML or link survives."""
    matrix = parse_matrix(
        "name: evil\nrun: {repeats: 2}\naxes: {placement: [none, before_model]}\n",
        Path("m.yaml"),
    )
    store = ResultsDir(tmp_path)
    store.write_manifest(matrix)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for i, cell in enumerate(matrix.cells):
        image = " ".join(EVIL[i::2])
        manifest["cells"][i]["settings"]["image"] = image
        for repeat in range(2):
            # the spec refuses such an image, so the records are written, then tampered with
            spec = cell.spec(repeat)
            run_dir = store.run_dir(cell, repeat)
            store.prepare_run(run_dir, spec)
            if repeat == 0:
                write_fake_record(spec, run_dir)
            else:
                (run_dir / "run.log").write_text("\n".join(EVIL))
                record_failure(run_dir, spec, "fail|ed<b>", " ".join(EVIL))
            record = json.loads((run_dir / "run.json").read_text())
            record["spec"]["image"] = image
            (run_dir / "run.json").write_text(json.dumps(record))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    write_reports(tmp_path, ["md"], plots=False)
    md = (tmp_path / "report.md").read_text()

    outside_fences = re.sub(r"(`{3,})text\n.*?\n\1", "", md, flags=re.S)
    assert "<script" not in outside_fences and "<img" not in outside_fences
    assert "<b>" not in outside_fences
    assert not re.search(r"(?<!\\)\]\((?!plots/)", outside_fences), "a link survived"
    tables = [ln for ln in outside_fences.splitlines() if ln.startswith("|")]
    assert tables
    header_cells = cells_of(tables[0])
    for row in tables[: 2 + len(matrix.cells)]:  # the cells table: header, rule, rows
        assert cells_of(row) == header_cells, row
    assert not [ln for ln in outside_fences.splitlines() if ln.startswith("| injected")]
    assert "| injected | row |" in md  # verbatim inside the log tail's code block only


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_escape_leaves_no_markup(text: str):
    out = escape(text)
    assert "\n" not in out and "\r" not in out
    assert "<" not in out and ">" not in out
    assert not UNESCAPED_PIPE.search(out)
    assert not re.search(r"(?<!\\)[\[\]`]", out)
