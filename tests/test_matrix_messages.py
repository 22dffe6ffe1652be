"""What a user is told about a bad matrix file, word for word: file:line, the problem, the fix.

Each case is a small file and the exact message and hint `harness plan` prints for it, so a
changed line number, a lost hint or a wrong branch of the validation shows here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import MatrixError
from harness.matrix import load_matrix, parse_matrix

PATH = Path("m.yaml")
DOCS_HINT = "docs/matrix.md lists every key; `harness schema` prints the schema"
ANCHOR_HINT = (
    "write the values out in full where the alias is used: a matrix file has no anchors (&name) "
    "or aliases (*name), so a few lines of YAML can never expand into billions of values"
)
SYNTAX_HINT = "check the indentation and quoting on that line"
PATCH_KEYS = (
    "image, accelerator, devices, placement, model, cudnn_deterministic, cudnn_benchmark, "
    "deterministic_algorithms, cublas_workspace, threads, allow_tf32, cpu_isa, seed, epochs, "
    "max_steps_per_epoch, pythonhashseed, batch_size, learning_rate, hidden_size, entry, params"
)
RUN_KEYS = (
    "repeats, timeout_s, max_runs, memory_limit, ddp_timeout_s, test_fault, count_host_syncs, "
    "threads, seed, epochs, max_steps_per_epoch"
)
IMAGE_FIX = (
    "image takes local or a reference like nvcr.io/nvidia/pytorch:24.01-py3 "
    "(lowercase path, optional :tag and @sha256:digest)"
)
WS_FIX = (
    "cublas_workspace takes auto, unset, or :SIZE:COUNT pairs (SIZE KiB, COUNT buffers), e.g. "
    ':4096:8 or :4096:8:16:8 (quote them: [":4096:8"])'
)


def invalid(*problems: str) -> str:
    """The message of a file pydantic refuses: one 'line / fix' pair per problem."""
    return "invalid matrix:\n" + "\n".join(problems)


#: (what is wrong, the file, the exact message, the exact hint)
CASES = [
    (
        "anchor",
        "name: t\naxes:\n  seed: &s [1]\n",
        "m.yaml:3: YAML anchor &s: anchors and aliases are not allowed",
        ANCHOR_HINT,
    ),
    (
        "alias",
        "name: t\naxes:\n  seed: [1]\n  devices: *d\n",
        "m.yaml:4: YAML alias *d: anchors and aliases are not allowed",
        ANCHOR_HINT,
    ),
    (
        "number too long",
        "name: t\naxes:\n  seed: [" + "1" * 5000 + "]\n",
        "m.yaml:3: the number '111111111111...1111111111111' is too long to read",
        "see docs/matrix.md for each key's range",
    ),
    (
        "syntax error",
        "name: t\naxes:\n  placement: [none\n  devices: [1]\n",
        "m.yaml:4: YAML syntax error: expected ',' or ']', but got ':'",
        SYNTAX_HINT,
    ),
    (
        "control character (a reader error: a position, not a mark)",
        "name: t\naxes:\n  seed: [1]\n# \x07\n",
        "m.yaml:4: YAML syntax error: special characters are not allowed",
        SYNTAX_HINT,
    ),
    (
        "not a mapping",
        "- a\n- b\n",
        "m.yaml:1: the matrix must be a mapping with name, run and axes",
        "start from examples/placement-quick.yaml",
    ),
    (
        "empty file",
        "",
        "m.yaml:1: the matrix must be a mapping with name, run and axes",
        "start from examples/placement-quick.yaml",
    ),
    (
        "duplicate key, nested",
        "name: t\naxes:\n  seed: [1]\n  seed: [2]\n",
        "m.yaml:4: key 'seed' appears twice",
        "keep one of them; YAML would silently use the last",
    ),
    (
        "duplicate key inside a list entry",
        "name: t\naxes: {seed: [1]}\ninclude:\n  - {seed: 2,\n     seed: 3}\n",
        "m.yaml:5: key 'seed' appears twice",
        "keep one of them; YAML would silently use the last",
    ),
    (
        "unknown key at the top level",
        "name: t\naxes: {seed: [1]}\nincludes: []\n",
        invalid(
            "  m.yaml:3: unknown key 'includes' in the top level\n"
            "    fix: did you mean 'include'? allowed here: "
            "name, run, workload, axes, include, exclude, slurm, control"
        ),
        DOCS_HINT,
    ),
    (
        "unknown key in run",
        "name: t\nrun:\n  repeat: 2\naxes: {seed: [1]}\n",
        invalid(
            "  m.yaml:3: unknown key 'repeat' in run\n"
            f"    fix: did you mean 'repeats'? allowed here: {RUN_KEYS}"
        ),
        DOCS_HINT,
    ),
    (
        "unknown key in axes, no close match, its value on the next line",
        "name: t\naxes:\n  seed: [1]\n  zzzz:\n    - 1\n",
        invalid(f"  m.yaml:4: unknown key 'zzzz' in axes\n    fix: allowed here: {PATCH_KEYS}"),
        DOCS_HINT,
    ),
    (
        "unknown key in an include entry",
        "name: t\naxes: {seed: [1]}\ninclude:\n  - {seed: 2}\n  - {seed: 3,\n     thread: 2}\n",
        invalid(
            "  m.yaml:6: unknown key 'thread' in include.1\n"
            f"    fix: did you mean 'threads'? allowed here: {PATCH_KEYS}"
        ),
        DOCS_HINT,
    ),
    (
        "empty axis",
        "name: t\naxes:\n  seed: []\n",
        invalid(
            "  m.yaml:3: axes.seed is empty\n"
            "    fix: give seed at least one value, e.g. seed: [...], or remove it"
        ),
        DOCS_HINT,
    ),
    (
        "missing name",
        "axes:\n  seed: [1]\n",
        invalid("  m.yaml:1: name is missing\n    fix: add name: ... (see docs/matrix.md)"),
        DOCS_HINT,
    ),
    (
        "not an image reference",
        "name: t\naxes:\n  image: [local, 'Bad Image']\n",
        invalid(
            "  m.yaml:3: axes.image.1: not a Docker image reference (got 'Bad Image')\n"
            f"    fix: {IMAGE_FIX}"
        ),
        DOCS_HINT,
    ),
    (
        "an image in an include entry",
        "name: t\naxes: {seed: [1]}\ninclude:\n  - image: '$(id)'\n",
        invalid(
            "  m.yaml:4: include.0.image: not a Docker image reference (got '$(id)')\n"
            f"    fix: {IMAGE_FIX}"
        ),
        DOCS_HINT,
    ),
    (
        "a cuBLAS workspace without its COUNT, among good values",
        'name: t\naxes:\n  cublas_workspace: [auto, unset, ":4096:8", ":4096"]\n',
        invalid(
            "  m.yaml:3: axes.cublas_workspace.3: not a value cublas_workspace takes "
            "(got ':4096')\n"
            f"    fix: {WS_FIX}"
        ),
        DOCS_HINT,
    ),
    (
        "a cuBLAS workspace as a number, in an include entry",
        "name: t\naxes: {seed: [1]}\ninclude:\n  - {seed: 2}\n  - cublas_workspace: 4096\n",
        invalid(
            "  m.yaml:5: include.1.cublas_workspace: Input should be a valid string (got 4096)\n"
            f"    fix: {WS_FIX}"
        ),
        DOCS_HINT,
    ),
    (
        "bare off read as a boolean",
        "name: t\naxes:\n  deterministic_algorithms: [off]\n",
        invalid(
            "  m.yaml:3: axes.deterministic_algorithms.0: Input should be 'off', 'on' or 'warn' "
            "(got False)\n"
            "    fix: deterministic_algorithms takes one of 'off', 'on', 'warn'; YAML reads bare "
            'off/on/yes/no as booleans, so quote them: "off"'
        ),
        DOCS_HINT,
    ),
    (
        "a value not among the choices",
        "name: t\naxes:\n  accelerator: [tpu]\n",
        invalid(
            "  m.yaml:3: axes.accelerator.0: Input should be 'cpu' or 'gpu' (got 'tpu')\n"
            "    fix: accelerator takes one of 'cpu', 'gpu'"
        ),
        DOCS_HINT,
    ),
    (
        "a number for a boolean",
        "name: t\naxes:\n  allow_tf32: [1]\n",
        invalid(
            "  m.yaml:3: axes.allow_tf32.0: Input should be a valid boolean (got 1)\n"
            "    fix: allow_tf32 takes true or false"
        ),
        DOCS_HINT,
    ),
    (
        "a string for a boolean",
        "name: t\naxes:\n  cudnn_benchmark: ['true']\n",
        invalid(
            "  m.yaml:3: axes.cudnn_benchmark.0: Input should be a valid boolean (got 'true')\n"
            "    fix: cudnn_benchmark takes true or false"
        ),
        DOCS_HINT,
    ),
    (
        "a setting out of range",
        "name: t\naxes:\n  devices: [0]\n",
        invalid(
            "  m.yaml:3: axes.devices.0: Input should be greater than or equal to 1 (got 0)\n"
            "    fix: devices takes a positive whole number"
        ),
        DOCS_HINT,
    ),
    (
        "a nullable setting out of range: the fix says null is allowed",
        "name: t\nrun:\n  max_steps_per_epoch: 0\naxes: {seed: [1]}\n",
        invalid(
            "  m.yaml:3: run.max_steps_per_epoch: Input should be greater than or equal to 1 "
            "(got 0)\n    fix: max_steps_per_epoch takes a positive whole number or null"
        ),
        DOCS_HINT,
    ),
    (
        "a float setting not positive",
        "name: t\naxes:\n  learning_rate: [0]\n",
        invalid(
            "  m.yaml:3: axes.learning_rate.0: Input should be greater than 0 (got 0)\n"
            "    fix: learning_rate takes a positive number (finite)"
        ),
        DOCS_HINT,
    ),
    (
        "a float setting infinite",
        "name: t\naxes:\n  learning_rate: [.inf]\n",
        invalid(
            "  m.yaml:3: axes.learning_rate.0: Input should be a finite number (got inf)\n"
            "    fix: learning_rate takes a positive number (finite)"
        ),
        DOCS_HINT,
    ),
    (
        "a boolean for a float",
        "name: t\naxes:\n  learning_rate: [true]\n",
        invalid(
            "  m.yaml:3: axes.learning_rate.0: Input should be a number, not true or false "
            "(got True)\n    fix: learning_rate takes a positive number (finite)"
        ),
        DOCS_HINT,
    ),
    (
        "a run option out of range",
        "name: t\nrun:\n  repeats: 0\naxes: {seed: [1]}\n",
        invalid(
            "  m.yaml:3: run.repeats: Input should be greater than or equal to 1 (got 0)\n"
            "    fix: repeats takes a whole number of at least 1"
        ),
        DOCS_HINT,
    ),
    (
        "max_runs out of range",
        "name: t\nrun:\n  max_runs: -3\naxes: {seed: [1]}\n",
        invalid(
            "  m.yaml:3: run.max_runs: Input should be greater than or equal to 1 (got -3)\n"
            "    fix: max_runs takes a whole number of at least 1"
        ),
        DOCS_HINT,
    ),
    (
        "a quoted number",
        "name: t\naxes:\n  threads: ['2']\n",
        invalid(
            "  m.yaml:3: axes.threads.0: Input should be a valid integer (got '2')\n"
            "    fix: threads takes a whole number, without quotes"
        ),
        DOCS_HINT,
    ),
    (
        "a null where none is allowed, in run",
        "name: t\nrun:\n  threads: null\naxes: {seed: [1]}\n",
        invalid(
            "  m.yaml:3: run.threads: Input should be a valid integer (got None)\n"
            "    fix: threads takes a whole number, without quotes"
        ),
        DOCS_HINT,
    ),
    (
        "a name with a space",
        "name: 'bad name'\naxes: {seed: [1]}\n",
        invalid(
            "  m.yaml:1: name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]*$' "
            "(got 'bad name')\n    fix: see docs/matrix.md for each key's type"
        ),
        DOCS_HINT,
    ),
    (
        "a memory limit with a unit word",
        "name: t\nrun: {memory_limit: 4 GB}\naxes: {seed: [1]}\n",
        invalid(
            "  m.yaml:2: run.memory_limit: String should match pattern '^[1-9][0-9]*[bkmg]?$' "
            "(got '4 GB')\n    fix: see docs/matrix.md for each key's type"
        ),
        DOCS_HINT,
    ),
    (
        "an axis that is not a list",
        "name: t\naxes:\n  seed: 5\n",
        invalid(
            "  m.yaml:3: axes.seed: Input should be a valid list (got 5)\n"
            "    fix: see docs/matrix.md for each key's type"
        ),
        DOCS_HINT,
    ),
    (
        "two problems: listed in line order, not in pydantic's order",
        "name: t\naxes:\n  threads: ['2']\nrun:\n  repeats: 0\n  max_runs: 0\n",
        invalid(
            "  m.yaml:3: axes.threads.0: Input should be a valid integer (got '2')\n"
            "    fix: threads takes a whole number, without quotes",
            "  m.yaml:5: run.repeats: Input should be greater than or equal to 1 (got 0)\n"
            "    fix: repeats takes a whole number of at least 1",
            "  m.yaml:6: run.max_runs: Input should be greater than or equal to 1 (got 0)\n"
            "    fix: max_runs takes a whole number of at least 1",
        ),
        DOCS_HINT,
    ),
    (
        "missing name after a comment: the line where the mapping starts",
        "# a comment\n\naxes: {seed: [1]}\n",
        invalid("  m.yaml:3: name is missing\n    fix: add name: ... (see docs/matrix.md)"),
        DOCS_HINT,
    ),
    (
        "a bad item of a block list: the item's own line",
        "name: t\naxes:\n  image:\n    - local\n    - 'Bad Image'\n",
        invalid(
            "  m.yaml:5: axes.image.1: not a Docker image reference (got 'Bad Image')\n"
            f"    fix: {IMAGE_FIX}"
        ),
        DOCS_HINT,
    ),
    (
        "a value on the line after its key: the key's line",
        "name: t\nrun:\n  repeats:\n    0\naxes: {seed: [1]}\n",
        invalid(
            "  m.yaml:3: run.repeats: Input should be greater than or equal to 1 (got 0)\n"
            "    fix: repeats takes a whole number of at least 1"
        ),
        DOCS_HINT,
    ),
    (
        "a word for a float",
        "name: t\naxes:\n  learning_rate: [fast]\n",
        invalid(
            "  m.yaml:3: axes.learning_rate.0: Input should be a valid number, unable to parse "
            "string as a number (got 'fast')\n"
            "    fix: learning_rate takes a positive number (finite)"
        ),
        DOCS_HINT,
    ),
    (
        "line 11 comes after line 3 (by number, not as text)",
        "name: t\naxes:\n  threads: ['2']\n  seed: [1]\n  devices: [1]\n  placement: [none]\n"
        "  epochs: [1]\n  batch_size: [8]\n  hidden_size: [4]\n  pythonhashseed: [0]\n"
        "  allow_tf32: [0]\n",
        invalid(
            "  m.yaml:3: axes.threads.0: Input should be a valid integer (got '2')\n"
            "    fix: threads takes a whole number, without quotes",
            "  m.yaml:11: axes.allow_tf32.0: Input should be a valid boolean (got 0)\n"
            "    fix: allow_tf32 takes true or false",
        ),
        DOCS_HINT,
    ),
    (
        "every combination excluded",
        "name: t\naxes: {placement: [none]}\nexclude: [{placement: none}]\n",
        "m.yaml:1: the matrix has no cells",
        "give at least one axis, or include entries, and check exclude",
    ),
    (
        "no axes and no include",
        "name: t\n",
        "m.yaml:1: the matrix has no cells",
        "give at least one axis, or include entries, and check exclude",
    ),
    (
        "more runs than max_runs (at ten times the cap: still counted, not refused unexpanded)",
        "name: t\nrun: {repeats: 1,\n  max_runs: 1}\naxes:\n"
        "  seed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n",
        "m.yaml:2: the matrix has 10 cells x 1 repeats = 10 runs, more than run.max_runs (1)",
        "if you mean it, raise it: run: {max_runs: 10}",
    ),
    (
        "repeats count in the runs",
        "name: t\nrun:\n  max_runs: 5\n  repeats: 3\naxes:\n  seed: [1, 2]\n",
        "m.yaml:4: the matrix has 2 cells x 3 repeats = 6 runs, more than run.max_runs (5)",
        "if you mean it, raise it: run: {max_runs: 6}",
    ),
    (
        "the axes multiply past ten times max_runs: refused before expanding",
        "name: t\nrun: {repeats: 1, max_runs: 1}\naxes:\n"
        "  seed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n",
        "m.yaml:3: the axes multiply to 11 combinations (x 1 repeats), far more than "
        "run.max_runs (1) even before exclude",
        "shorten the axes; if you mean it, raise it: run: {max_runs: 11}",
    ),
    (
        "include entries and repeats count in the bound",
        "name: t\nrun: {repeats: 2, max_runs: 1}\naxes:\n  seed: [1, 2, 3, 4, 5]\n"
        "include: [{seed: 9}]\n",
        "m.yaml:3: the axes multiply to 5 combinations (x 2 repeats), far more than "
        "run.max_runs (1) even before exclude",
        "shorten the axes; if you mean it, raise it: run: {max_runs: 12}",
    ),
    (
        "axes multiply",
        "name: t\nrun: {repeats: 1, max_runs: 1}\naxes:\n  seed: [1, 2, 3, 4]\n"
        "  devices: [1, 2, 3]\n",
        "m.yaml:3: the axes multiply to 12 combinations (x 1 repeats), far more than "
        "run.max_runs (1) even before exclude",
        "shorten the axes; if you mean it, raise it: run: {max_runs: 12}",
    ),
    (
        "a cell the parts allow but the whole does not",
        "name: t\naxes:\n  placement: [none]\ninclude:\n"
        "  - {placement: before_model, devices: null}\n",
        "m.yaml:2: a cell's settings are invalid: devices: Input should be a valid integer",
        "see docs/matrix.md for each key's type",
    ),
    (
        "a cell with two invalid settings: both named",
        "name: t\naxes:\n  placement: [none]\ninclude:\n"
        "  - {placement: before_model, devices: null, epochs: null}\n",
        "m.yaml:2: a cell's settings are invalid: devices: Input should be a valid integer; "
        "epochs: Input should be a valid integer",
        "see docs/matrix.md for each key's type",
    ),
    (
        "ten include entries and no axes: counted against max_runs, not the axes bound",
        "name: t\nrun: {repeats: 1, max_runs: 1}\ninclude:\n"
        + "".join(f"  - {{seed: {i}}}\n" for i in range(10)),
        "m.yaml:2: the matrix has 10 cells x 1 repeats = 10 runs, more than run.max_runs (1)",
        "if you mean it, raise it: run: {max_runs: 10}",
    ),
    (
        "a value listed twice in an axis",
        "name: t\naxes:\n  seed: [1, 2]\n  placement: [none,\n    before_model, none]\n",
        "m.yaml:5: axes.placement lists 'none' twice, which makes duplicate cells",
        "list each value of placement once",
    ),
    (
        "the same number twice (1 and 1.0)",
        "name: t\naxes:\n  learning_rate: [1, 1.0]\n",
        "m.yaml:3: axes.learning_rate lists 1.0 twice, which makes duplicate cells",
        "list each value of learning_rate once",
    ),
    (
        "an include that repeats another include's cell",
        "name: t\naxes: {seed: [1, 2]}\ninclude:\n  - {seed: 3}\n  - {seed: 3, devices: 1}\n",
        "m.yaml:5: duplicate cell local-cpu1-before_model-det1-bench0-algoff-seed3-15adbf "
        "(15adbfb8596c): the same settings as cell #3",
        "remove the include entry, or change one of its values; settings equal to their "
        "default count as the same cell",
    ),
    (
        "an include that repeats a cell (a default value counts as the same)",
        "name: t\naxes: {placement: [none]}\ninclude:\n  - {placement: before_model}\n"
        "  - {placement: before_model, seed: 201014}\n  - {placement: process_start}\n",
        "m.yaml:5: duplicate cell local-cpu1-before_model-det1-bench0-algoff-ce90af "
        "(ce90aff5781e): the same settings as cell #2",
        "remove the include entry, or change one of its values; settings equal to their "
        "default count as the same cell",
    ),
]


@pytest.mark.parametrize(
    ("text", "message", "hint"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_exact_message_and_hint(text: str, message: str, hint: str):
    with pytest.raises(MatrixError) as info:
        parse_matrix(text, PATH)
    assert (info.value.message, info.value.hint) == (message, hint)


def test_a_missing_file_is_a_matrix_error_naming_it(tmp_path: Path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(MatrixError) as info:
        load_matrix(path)
    assert str(info.value) == (
        f"{path}: cannot read the matrix file (No such file or directory)\n"
        "  hint: give the path of a matrix YAML file, e.g. examples/placement-quick.yaml"
    )


def test_the_run_cap_is_inclusive():
    """Exactly max_runs runs are allowed; so are axes that multiply to ten times the cap when
    exclude brings the runs back under it."""
    cells = parse_matrix("name: t\nrun: {repeats: 2, max_runs: 4}\naxes: {seed: [1, 2]}\n", PATH)
    assert cells.total_runs == 4
    text = (
        "name: t\nrun: {repeats: 1, max_runs: 1}\naxes:\n  seed: [1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
        "include: [{placement: none}]\n"
        "exclude: [{seed: 2}, {seed: 3}, {seed: 4}, {seed: 5}, {seed: 6}, {seed: 7}, {seed: 8},"
        " {seed: 9}]\n"
    )
    loaded = parse_matrix(text, PATH)
    assert [c.name for c in loaded.cells] == ["local-cpu1-none-det1-bench0-algoff"]
    assert loaded.cells[0].settings["seed"] == 1
