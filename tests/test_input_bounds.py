"""Input bounds and text that cannot act (issue 10).

- A YAML alias bomb (ten levels of ten aliases) is refused at its line within a second, through
  ``parse_matrix`` and through a real ``harness plan`` process; no anchor or alias is read.
- Numbers: floats are finite (``.inf``, ``.nan``, ``1e400`` refused), ``seed`` and
  ``pythonhashseed`` lie in [0, 2**32); the matrix, the spec and the JSON Schema all say so.
- What the terminal shows from runs (a workload's error text) has no control characters or
  escape sequences, and no line of it can start a GitHub workflow command.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cli.main import main
from harness.contract.settings import BY_NAME, FLOAT_MAX, SEED_MAX
from harness.contract.spec import RunSpec, SpecError
from harness.errors import MatrixError
from harness.matrix import json_schema, parse_matrix
from harness.run.progress import PlainProgress, Progress, make_progress
from harness.text import TerminalSafeFormatter, terminal_safe

ROOT = Path(__file__).resolve().parents[1]
PATH = Path("bounds/m.yaml")


def bomb(levels: int = 10, width: int = 10) -> str:
    """``levels`` lists of ``width`` aliases of the list before: width**levels values."""
    lines = ["name: bomb", "a: &a [" + ",".join(["x"] * width) + "]"]
    names = "abcdefghijklmnopqrstuvwxyz"
    for i in range(1, levels):
        lines.append(f"{names[i]}: &{names[i]} [" + ",".join([f"*{names[i - 1]}"] * width) + "]")
    lines.append(f"axes: {{seed: *{names[levels - 1]}}}")
    return "\n".join(lines) + "\n"


def refused(text: str) -> str:
    with pytest.raises(MatrixError) as info:
        parse_matrix(text, PATH)
    return f"{info.value.message}\n  hint: {info.value.hint}"


def line_of(message: str, what: str) -> int:
    """The line number the message gives for the problem that mentions ``what``."""
    for line in message.splitlines():
        if what in line:
            match = re.search(re.escape(str(PATH)) + r":(\d+):", line)
            assert match, line
            return int(match.group(1))
    raise AssertionError(f"{what!r} not in {message}")


# --- YAML anchors and aliases -------------------------------------------------------------------


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (not hang) when the block runs past ``seconds``: SIGALRM, main thread only."""

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still busy after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_alias_bomb_is_refused_at_its_line_within_a_second():
    text = bomb()
    started = time.perf_counter()
    with deadline(5):
        message = refused(text)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"{elapsed:.2f} s"  # 1 s is the promise; it takes milliseconds
    assert f"{PATH}:2:" in message  # the first anchor, &a, is on line 2
    assert "anchors and aliases are not allowed" in message
    assert "write the values out" in message


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("name: t\nseeds: &s [1, 2]\naxes: {seed: [1]}\n", 2, "anchor &s"),  # unused anchor
        ("name: t\naxes:\n  seed: *nowhere\n", 3, "alias *nowhere"),  # undefined alias
        (
            "name: t\nrun: &r {repeats: 2}\naxes: {placement: [none]}\ninclude:\n  - <<: *r\n",
            2,
            "anchor &r",
        ),  # a merge key needs an alias too
        ("name: t\naxes: {seed: [1]}\nexclude: [{seed: &one 1}]\n", 3, "anchor &one"),
    ],
)
def test_any_anchor_or_alias_is_refused_at_its_line(text: str, line: int, what: str):
    message = refused(text)
    assert f"{PATH}:{line}: YAML {what}: anchors and aliases are not allowed" in message


def test_the_matrix_is_read_by_the_guarded_loader_only(monkeypatch):
    """Line numbers (the composed nodes) and the data come from one guarded read: neither
    yaml.compose nor yaml.safe_load (which would expand aliases) is called."""

    def unguarded(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an unguarded YAML read")

    for name in ("compose", "safe_load", "load", "full_load", "unsafe_load"):
        monkeypatch.setattr(yaml, name, unguarded)
    loaded = parse_matrix("name: t\naxes: {placement: [none, before_model]}\n", PATH)
    assert len(loaded.cells) == 2
    with deadline(5):
        assert "anchors and aliases" in refused(bomb())


def test_a_number_too_long_to_read_is_a_matrix_error():
    message = refused("name: t\naxes:\n  seed: [" + "1" * 5000 + "]\n")
    assert f"{PATH}:3:" in message and "too long to read" in message


def test_the_cli_answers_the_bomb_with_a_message_not_a_traceback(tmp_path: Path):
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb())
    proc = subprocess.run(  # argv list; before the fix this ran for minutes
        [sys.executable, "-m", "harness.cli", "plan", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:2: YAML anchor &a: anchors and aliases are not allowed" in proc.stderr
    assert "write the values out" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# --- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "1e400", "1.0e+400", "true"])
@pytest.mark.parametrize("where", ["axes", "include", "exclude"])
def test_learning_rate_must_be_finite(value: str, where: str):
    if where == "axes":
        text = f"name: t\naxes:\n  learning_rate: [0.001, {value}]\n"
    else:
        text = f"name: t\naxes:\n  placement: [none]\n{where}:\n  - learning_rate: {value}\n"
    message = refused(text)
    line = line_of(message, "learning_rate")
    assert line == (3 if where == "axes" else 5), message
    assert "fix: learning_rate takes a positive number (finite)" in message
    if value != "true":
        assert "Input should be a finite number" in message
    else:
        assert "Input should be a number, not true or false" in message


@pytest.mark.parametrize("value", [".inf", ".nan", "1e400", "-1", "0"])
def test_run_timeout_must_be_positive_and_finite(value: str):
    message = refused(f"name: t\nrun:\n  repeats: 1\n  timeout_s: {value}\naxes: {{seed: [1]}}\n")
    assert line_of(message, "run.timeout_s") == 4
    assert "fix: timeout_s takes a positive finite number of seconds" in message


def test_finite_floats_are_still_read_as_before():
    # PyYAML reads 1e-4 (no dot) as a string; the matrix takes it as the number it means
    text = "name: t\nrun: {timeout_s: 1.5e+3}\naxes:\n  learning_rate: [1e-4, 1.0e+30, 0.5]\n"
    loaded = parse_matrix(text, PATH)
    assert [c.settings["learning_rate"] for c in loaded.cells] == [1e-4, 1e30, 0.5]
    assert loaded.model.run.timeout_s == 1500.0


@pytest.mark.parametrize(
    ("text", "key", "got"),
    [
        ("name: t\naxes:\n  seed: [1, -1]\n", "axes.seed.1", "-1"),
        ("name: t\naxes:\n  seed: [4294967296]\n", "axes.seed.0", "4294967296"),
        ("name: t\nrun:\n  seed: 4294967296\n", "run.seed", "4294967296"),
        ("name: t\naxes:\n  pythonhashseed: [4294967296]\n", "axes.pythonhashseed.0", "4294967296"),
        ("name: t\naxes:\n  pythonhashseed: [-1]\n", "axes.pythonhashseed.0", "-1"),
        ("name: t\naxes: {seed: [1]}\ninclude:\n  - {seed: -5}\n", "include.0.seed", "-5"),
    ],
)
def test_seeds_outside_0_to_2_32_are_refused_with_the_range(text: str, key: str, got: str):
    message = refused(text)
    assert line_of(message, key) == text.count("\n"), message  # the last line holds the value
    assert f"(got {got})" in message
    name = key.split(".")[-1] if not key[-1].isdigit() else key.split(".")[1]
    assert f"fix: {name} takes a whole number from 0 to 4294967295" in message


def test_the_seed_message_reads_well():
    message = refused("name: t\naxes:\n  seed: [4294967296]\n")
    assert (
        f"{PATH}:3: axes.seed.0: Input should be less than or equal to 4294967295 "
        "(got 4294967296)\n    fix: seed takes a whole number from 0 to 4294967295"
    ) in message


def test_the_largest_seeds_are_accepted():
    text = "name: t\nrun: {seed: 4294967295}\naxes:\n  pythonhashseed: [0, 4294967295]\n"
    cells = parse_matrix(text, PATH).cells
    assert [(c.settings["seed"], c.settings["pythonhashseed"]) for c in cells] == [
        (SEED_MAX, 0),
        (SEED_MAX, SEED_MAX),
    ]
    assert parse_matrix("name: t\naxes: {seed: [0, 4294967295]}\n", PATH).cells[1].settings[
        "seed"
    ] == (SEED_MAX)


@pytest.mark.parametrize(
    "change",
    [
        {"seed": -1},
        {"seed": 2**32},
        {"pythonhashseed": 2**32},
        {"pythonhashseed": -1},
        {"learning_rate": math.inf},
        {"learning_rate": math.nan},
        {"learning_rate": 10**400},
    ],
)
def test_the_spec_refuses_what_the_matrix_refuses(change: dict[str, Any]):
    with pytest.raises(SpecError, match=f"{next(iter(change))} must be"):
        RunSpec(**change)


def test_the_spec_takes_the_bounds_themselves():
    spec = RunSpec(seed=SEED_MAX, pythonhashseed=SEED_MAX, learning_rate=1e30)
    assert (spec.seed, spec.pythonhashseed) == (SEED_MAX, SEED_MAX)
    assert RunSpec(seed=0, pythonhashseed=0).seed == 0


def test_the_table_describes_the_ranges():
    assert BY_NAME["seed"].describe() == "an integer from 0 to 4294967295"
    assert BY_NAME["pythonhashseed"].describe() == "an integer from 0 to 4294967295"
    assert "finite" in BY_NAME["learning_rate"].describe()
    doc = (ROOT / "docs" / "matrix.md").read_text(encoding="utf-8")
    assert "| `seed` | an integer from 0 to 4294967295 |" in doc
    assert "anchors and aliases" in doc.lower()


def _walk(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def _schemas_of(schema: dict[str, Any], model: str, field: str) -> list[dict[str, Any]]:
    """The non-null schemas a field's values take (an axis: its items)."""
    prop = schema["$defs"][model]["properties"][field]
    found = []
    for option in prop.get("anyOf", [prop]):
        if option.get("type") == "array":
            option = option["items"]
        if option.get("type") != "null":
            found.append(option)
    return found


@pytest.mark.parametrize("field", ["seed", "pythonhashseed"])
@pytest.mark.parametrize("model", ["Axes", "Patch", "RunBlock"])
def test_the_schema_carries_the_seed_bounds(field: str, model: str):
    schema = json_schema()
    if field not in schema["$defs"][model]["properties"]:
        assert model == "RunBlock" and field == "pythonhashseed"  # not a run: default
        return
    for option in _schemas_of(schema, model, field):
        assert option["type"] == "integer"
        assert option["minimum"] == 0
        assert option.get("maximum") == SEED_MAX or option.get("exclusiveMaximum") == 2**32


def test_every_number_in_the_schema_is_bounded_finite():
    schema = json_schema()
    numbers = [(p, n) for p, n in _walk(schema) if n.get("type") == "number"]
    assert numbers  # learning_rate and timeout_s at least
    for path, node in numbers:
        assert node.get("maximum", math.inf) <= FLOAT_MAX, path
        low = node.get("minimum", node.get("exclusiveMinimum", -math.inf))
        assert low >= -FLOAT_MAX, path
    json.dumps(schema, allow_nan=False)  # no inf or NaN anywhere
    committed = json.loads((ROOT / "docs" / "matrix.schema.json").read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(schema, sort_keys=True))


# --- terminal text ---------------------------------------------------------------------------

EVIL = "\x1b[31mred\x1b[0m\n::error::boom"
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def no_command_lines(text: str) -> bool:
    return all(not line.lstrip().startswith("::") for line in text.splitlines())


@pytest.mark.parametrize(
    ("raw", "one_line", "lines"),
    [
        (EVIL, "red ::error::boom", "red\n> ::error::boom"),
        ("::add-mask::secret", "> ::add-mask::secret", "> ::add-mask::secret"),
        (
            "  \t::set-output name=x::1",
            ">    ::set-output name=x::1",
            ">    ::set-output name=x::1",
        ),
        ("ok ##[error]x", "ok # #[error]x", "ok # #[error]x"),
        ("a\r\n::warning::w", "a ::warning::w", "a\n> ::warning::w"),
        ("\x1b]0;new title\x07done", "done", "done"),
        ("\x9b2Jclear \x07bell\x00nul", "clear bellnul", "clear bellnul"),
        ("e\u2028::debug::d", "e ::debug::d", "e\n> ::debug::d"),
        ("\u202egnp.exe", "gnp.exe", "gnp.exe"),
        ("bad \udcff byte", "bad \ufffd byte", "bad \ufffd byte"),
    ],
)
def test_terminal_safe(raw: str, one_line: str, lines: str):
    assert terminal_safe(raw) == one_line
    assert terminal_safe(raw, multiline=True) == lines


@settings(max_examples=400, deadline=None)
@given(
    st.text(
        alphabet=st.one_of(
            st.sampled_from(["\x1b", "[", "]", ":", "#", "\n", "\r", " ", "\t", "\x07", "\x9b"]),
            st.characters(),
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_terminal_safe_output_never_acts(raw: str, multiline: bool):
    safe = terminal_safe(raw, multiline=multiline)
    assert not CONTROL.search(safe), repr(safe)
    assert ("\n" in safe) <= multiline
    assert no_command_lines(safe) and "##[" not in safe, repr(safe)
    assert terminal_safe(safe, multiline=multiline) == safe  # idempotent
    safe.encode("utf-8")  # writable: no lone surrogates


def _failed_run(mode: str, message: str) -> str:
    stream = io.StringIO()
    progress = make_progress(mode, stream)
    progress.start({"c1": 1}, {})
    progress.run_started("c1/0", "c1", "cell-one #0", Path("/nonexistent/run"))
    progress.run_finished("c1/0", "c1", "cell-one #0", "failed", 1.0, message)
    progress.close()
    return stream.getvalue()


@pytest.mark.parametrize("mode", ["plain", "rich"])
def test_the_progress_lines_show_a_workload_error_without_acting(mode: str):
    message = f"exit code 1: RuntimeError: {EVIL}\r::add-mask::x [/bold] ##[warning]w"
    out = _failed_run(mode, message)
    assert "\x1b" not in out and "\x9b" not in out
    assert no_command_lines(out), out
    assert "##[" not in out
    assert "red" in out and "::error::boom" in out  # the text is shown, only defused
    assert "failed" in out and "cell-one #0" in out


def test_every_display_is_given_safe_text_and_plain_lines_are_safe_anyway():
    """Two layers: the base class hands every display safe text, and the plain display makes
    whatever it writes safe again (a subclass that draws its own text stays safe)."""
    seen: list[str] = []

    class Recorder(Progress):
        def draw_event(self, text: str) -> None:
            seen.append(text)

    recorder = Recorder()
    recorder.start({"c1": 1}, {})
    recorder.run_started("k", "c1", "label\x1b[1m\n::error::x", Path("/nonexistent"))
    recorder.run_finished("k", "c1", "label", "failed", 1.0, EVIL)
    assert len(seen) == 2
    for text in seen:
        assert terminal_safe(text) == text and "\n" not in text and "\x1b" not in text

    stream = io.StringIO()
    PlainProgress(stream).draw_event(EVIL)
    assert "\x1b" not in stream.getvalue() and no_command_lines(stream.getvalue())


def test_rich_never_wraps_a_long_message_into_a_command_line():
    out = _failed_run("rich", "x" * 150 + " ::error::boom " + "y " * 60)
    assert no_command_lines(out), out


def test_harness_errors_and_log_lines_are_printed_terminal_safe(tmp_path: Path, capsys):
    """A HarnessError quoting a path (a name from a manifest or a record): printed safe."""
    path = tmp_path / "m\x1b[2J\n::error::pwned.yaml"
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "cannot read the matrix file" in err
    assert "\x1b" not in err and no_command_lines(err), err

    record = logging.LogRecord("harness", logging.WARNING, __file__, 1, EVIL, None, None)
    line = TerminalSafeFormatter("harness: %(message)s").format(record)
    assert line == "harness: red\n> ::error::boom"


# --- a real run at the bounds ------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_run_takes_the_largest_seeds(workload, tmp_path: Path, mnist_dir: Path):
    """2**32 - 1 is the largest seed numpy takes and the largest PYTHONHASHSEED: a real repeat
    with both at the bound trains (one more, and every repeat would die)."""
    from harness.results.run_reader import load_record

    spec = {
        "seed": SEED_MAX,
        "pythonhashseed": SEED_MAX,
        "placement": "process_start",
        "max_steps_per_epoch": 5,
    }
    result = workload(spec, tmp_path / "run", data_dir=mnist_dir, timeout=600)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    record = load_record(tmp_path / "run")
    assert record.status == "ok" and record.steps == 5
    assert record.spec["seed"] == SEED_MAX == record.spec["pythonhashseed"]
    assert record.provenance.env.get("PYTHONHASHSEED") == str(SEED_MAX)
