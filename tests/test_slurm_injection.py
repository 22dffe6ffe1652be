"""What ``harness submit slurm`` writes and shows cannot be steered by the strings it is given
(issue 28, item 17): a line break in ``--out`` stays inside a string literal of the batch
scripts (it put a line of Python into ``merge.sbatch``), and a control character in
``slurm.python`` or an extra ``#SBATCH`` option is refused before anything is shown, so no
terminal escape reaches the dry run's output, piped or not."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_slurm_plan import QUICK, dry_run, request, scripts_of

from harness.errors import HarnessError
from harness.slurm.batch_scripts import (
    ArrayGroup,
    SlurmRequest,
    array_script,
    has_controls,
    merge_script,
)

#: the script's statements, whatever --out is: nothing else may run
STATEMENTS = [ast.Import, ast.ImportFrom, ast.Expr]


@pytest.mark.parametrize("sep", ["\n", "\r", "\u2028", "\x0b"], ids=["lf", "cr", "ls", "vt"])
def test_a_line_break_in_out_stays_in_a_string_literal(capsys, tmp_path: Path, sep: str):
    out = tmp_path / f"x{sep}import os; os.system('touch {tmp_path}/pwned'){sep}#"
    code, text, _ = dry_run(capsys, str(QUICK), "--shards", "2", "--out", str(out))
    assert code == 0
    scripts = scripts_of(text)
    assert set(scripts) == {"array-1.sbatch", "merge.sbatch"}
    for name, script in scripts.items():
        tree = ast.parse(script)
        assert [type(s) for s in tree.body] == STATEMENTS, (name, script)
        assert not any(has_controls(line) for line in script.splitlines()), name
        call = tree.body[-1].value  # sys.exit(main(kind, root))
        assert [ast.literal_eval(a) for a in call.args[0].args][1] == str(out)
    assert f"into {json.dumps(str(out))} and write" in scripts["merge.sbatch"]
    assert not (tmp_path / "pwned").exists()


def test_a_script_line_with_a_control_character_is_refused_even_unchecked(tmp_path: Path):
    """The last guard: a request whose check() was skipped still writes no such line."""
    for python in ("/usr/bin/python3\nimport os", "/usr/bin/python3\x1b]0;x\x07"):
        unchecked = SlurmRequest(python=python)
        with pytest.raises(HarnessError, match="a batch script line would hold a control") as e:
            merge_script(unchecked, "m", tmp_path)
        assert e.value.message.endswith(f": {json.dumps('#!' + python)}")
        assert e.value.hint == "remove it from the slurm options, the matrix name or --out"
    with pytest.raises(HarnessError, match="control character"):
        merge_script(request(sbatch=("--comment=\x1b[31m",)), "m", tmp_path)
    assert merge_script(request(), "m", tmp_path).count("\n") == 13
    group = ArrayGroup(1, (1,), 1, 0, "01:00:00", 1)
    with pytest.raises(HarnessError):
        array_script(request(partition="p\x1b[2J"), group, "m", 1, tmp_path)


@pytest.mark.parametrize(
    "python, sbatch",
    [("/usr/bin/python3\x1b[31m", None), ("/usr/bin/python3", "--comment=\x1b]0;owned\x07")],
    ids=["python", "sbatch-option"],
)
def test_control_characters_in_the_slurm_options_are_refused_before_the_dry_run(
    python: str, sbatch: str | None
):
    with pytest.raises(HarnessError, match="holds a control character") as caught:
        SlurmRequest(python=python, sbatch=(sbatch,) if sbatch else ()).check()
    assert "\x1b" not in caught.value.message and "\\x1b" in caught.value.message
    name = "slurm.python" if sbatch is None else "slurm.sbatch"
    assert caught.value.message.startswith(f"{name} {python if sbatch is None else sbatch!r}")
    assert caught.value.message.endswith(
        "holds a control character: a batch script line must be printable, and the dry run "
        "would show it to your terminal"
    )
    assert caught.value.hint == f"remove it from {name} (or the command-line option that set it)"


def test_slurm_python_with_a_terminal_escape_never_reaches_a_pipe(tmp_path: Path):
    """The real command line, its output piped: exit 2, the escape shown as text, never sent."""
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        QUICK.read_text() + 'slurm: {python: "/usr/bin/python3\\e]0;owned\\a\\e[31m"}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "submit", "slurm", str(matrix), "--out",
         str(tmp_path / "sub"), "--dry-run"],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert b"\x1b" not in done.stdout + done.stderr and b"\x07" not in done.stdout + done.stderr
    assert b"slurm.python" in done.stderr and b"control character" in done.stderr
    assert not (tmp_path / "sub").exists()
