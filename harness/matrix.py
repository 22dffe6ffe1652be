"""The matrix file: schema, validation with file:line messages, expansion into cells, cell ids.

Expansion is a pure function of the validated model, so ``plan``, ``run``, resume and the report
all see the same cells in the same order. include/exclude follow GitHub Actions'
``strategy.matrix`` (docs/matrix.md).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from harness.contract import CELL_SETTINGS, DEFAULT_SEED, RunSpec
from harness.errors import MatrixError

SCHEMA_PATH = "docs/matrix.schema.json"
DEFAULT_MAX_RUNS = 2000

Placement = Literal["none", "before_trainer", "before_model", "process_start"]
Algorithms = Literal["off", "on", "warn"]
Accelerator = Literal["cpu", "gpu"]
PositiveInt = Field(ge=1)

#: ``local``, or a Docker image reference ([registry[:port]/]path[:tag][@sha256:digest]); no
#: spaces, quotes, shell or Markdown characters can pass, so an image name is safe everywhere.
IMAGE_PATTERN = (
    r"^(local|[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?)$"
)
Image = Annotated[str, Field(pattern=IMAGE_PATTERN, max_length=255)]
Positive = Annotated[StrictInt, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunBlock(_Strict):
    """How every cell runs; seed, epochs, max_steps_per_epoch, threads: defaults axes may vary."""

    repeats: StrictInt = Field(3, ge=1, description="runs per cell")
    epochs: StrictInt = Field(1, ge=1)
    max_steps_per_epoch: StrictInt | None = Field(None, ge=1, description="null: whole epoch")
    seed: StrictInt = DEFAULT_SEED
    threads: StrictInt = Field(1, ge=1, description="torch intra-op threads per process")
    timeout_s: float = Field(3600.0, gt=0, description="per run")
    max_runs: StrictInt = Field(
        DEFAULT_MAX_RUNS, ge=1, description="refuse matrices with more runs than this"
    )
    memory_limit: str | None = Field(
        None,
        pattern=r"^[1-9][0-9]*[bkmg]?$",
        description="memory per container (docker executor), e.g. 4g; null: no limit",
    )


class CellSettings(_Strict):
    """One cell's full settings: the workload spec's cell-defining fields, typed."""

    image: Image = "local"
    placement: Placement = "before_model"
    seed: StrictInt = DEFAULT_SEED
    epochs: StrictInt = Field(1, ge=1)
    max_steps_per_epoch: StrictInt | None = Field(None, ge=1)
    threads: StrictInt = Field(1, ge=1)
    accelerator: Accelerator = "cpu"
    devices: StrictInt = Field(1, ge=1)
    cudnn_deterministic: StrictBool = True
    cudnn_benchmark: StrictBool = False
    deterministic_algorithms: Algorithms = "off"
    allow_tf32: StrictBool = False
    pythonhashseed: StrictInt = 0
    batch_size: StrictInt = Field(32, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    hidden_size: StrictInt = Field(64, ge=1)


def _axis(item: Any) -> Any:
    return Field(None, min_length=1, description=f"values of {item}")


class Axes(_Strict):
    """Each axis is a non-empty list of values of one cell setting."""

    image: list[Image] | None = _axis("image")
    placement: list[Placement] | None = _axis("placement")
    seed: list[StrictInt] | None = _axis("seed")
    epochs: list[Positive] | None = _axis("epochs")
    max_steps_per_epoch: list[Positive | None] | None = _axis("max_steps_per_epoch")
    threads: list[Positive] | None = _axis("threads")
    accelerator: list[Accelerator] | None = _axis("accelerator")
    devices: list[Positive] | None = _axis("devices")
    cudnn_deterministic: list[StrictBool] | None = _axis("cudnn_deterministic")
    cudnn_benchmark: list[StrictBool] | None = _axis("cudnn_benchmark")
    deterministic_algorithms: list[Algorithms] | None = _axis("deterministic_algorithms")
    allow_tf32: list[StrictBool] | None = _axis("allow_tf32")
    pythonhashseed: list[StrictInt] | None = _axis("pythonhashseed")
    batch_size: list[Positive] | None = _axis("batch_size")
    learning_rate: list[PositiveFloat] | None = _axis("learning_rate")
    hidden_size: list[Positive] | None = _axis("hidden_size")


class Patch(_Strict):
    """An include/exclude entry: some cell settings, each a single value."""

    image: Image | None = None
    placement: Placement | None = None
    seed: StrictInt | None = None
    epochs: StrictInt | None = Field(None, ge=1)
    max_steps_per_epoch: StrictInt | None = Field(None, ge=1)
    threads: StrictInt | None = Field(None, ge=1)
    accelerator: Accelerator | None = None
    devices: StrictInt | None = Field(None, ge=1)
    cudnn_deterministic: StrictBool | None = None
    cudnn_benchmark: StrictBool | None = None
    deterministic_algorithms: Algorithms | None = None
    allow_tf32: StrictBool | None = None
    pythonhashseed: StrictInt | None = None
    batch_size: StrictInt | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    hidden_size: StrictInt | None = Field(None, ge=1)


class Matrix(_Strict):
    """The whole matrix file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=80)
    run: RunBlock = Field(default_factory=RunBlock)
    axes: Axes = Field(default_factory=Axes)
    include: list[Patch] = Field(default_factory=list)
    exclude: list[Patch] = Field(default_factory=list)


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: full settings, a stable id and a readable, unique name."""

    id: str
    name: str
    settings: dict[str, Any]

    @property
    def dirname(self) -> str:
        return f"{self.name}--{self.id}"

    def spec(self, repeat: int, data_dir: str | None = None) -> RunSpec:
        return RunSpec(
            **self.settings, repeat=repeat, cell_id=self.id, cell_name=self.name, data_dir=data_dir
        )


@dataclass(frozen=True)
class LoadedMatrix:
    path: Path
    text: str
    model: Matrix
    cells: list[Cell]

    @property
    def text_sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def digest(self) -> str:
        """Identity of what the matrix runs; timeout_s, max_runs and memory_limit may change on
        resume (raising a limit after a timeout or an OOM kill must not orphan the results)."""
        data = self.model.model_dump(mode="json")
        data["run"].pop("timeout_s")
        data["run"].pop("max_runs")
        data["run"].pop("memory_limit")
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()

    @property
    def total_runs(self) -> int:
        return len(self.cells) * self.model.run.repeats


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def cell_id(settings: dict[str, Any]) -> str:
    """First 12 hex of sha256 over the canonical JSON of the full, normalized settings."""
    normalized = CellSettings.model_validate(settings).model_dump(mode="json")
    return hashlib.sha256(canonical_json(normalized).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- expansion


def expand(model: Matrix) -> list[dict[str, Any]]:
    """The combinations, in stable order, before defaults: GitHub Actions semantics.

    1. the cartesian product of the axes in file order; 2. drop combinations matching an
    exclude entry (all its keys equal); 3. each include entry extends every original combination
    whose axis values it does not contradict (adding or overwriting only non-axis keys); if it
    extends none, it is added as a new combination.
    """
    axes = {k: v for k, v in model.axes.model_dump(exclude_unset=True).items() if v is not None}
    names = list(axes)
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]
    if not axes:
        combos = []
    excludes = [e.model_dump(exclude_unset=True) for e in model.exclude]
    combos = [c for c in combos if not any(_matches(c, e) for e in excludes)]
    originals = len(combos)
    for entry in (i.model_dump(exclude_unset=True) for i in model.include):
        matched = False
        for combo in combos[:originals]:
            if all(combo[k] == v for k, v in entry.items() if k in axes):
                combo.update({k: v for k, v in entry.items() if k not in axes})
                matched = True
        if not matched:
            combos.append(dict(entry))
    return combos


def _matches(combo: dict[str, Any], pattern: dict[str, Any]) -> bool:
    return all(k in combo and combo[k] == v for k, v in pattern.items())


def full_settings(model: Matrix, combo: dict[str, Any]) -> dict[str, Any]:
    run = model.run
    base = {
        "seed": run.seed,
        "epochs": run.epochs,
        "max_steps_per_epoch": run.max_steps_per_epoch,
        "threads": run.threads,
    }
    return CellSettings.model_validate({**base, **combo}).model_dump(mode="json")


def make_cells(model: Matrix, combos: list[dict[str, Any]]) -> list[Cell]:
    settings = [full_settings(model, c) for c in combos]
    names = _readable_names(settings)
    return [Cell(cell_id(s), n, s) for s, n in zip(settings, names, strict=True)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.") or "x"


def _short_image(image: str) -> str:
    return _slug(image.rsplit("/", 1)[-1].replace(":", "-"))


def _readable_names(all_settings: list[dict[str, Any]]) -> list[str]:
    """``<image>-<acc><devices>-<placement>-det<0|1>-bench<0|1>-alg<x>`` + varying extras."""
    core = {
        "image",
        "accelerator",
        "devices",
        "placement",
        "cudnn_deterministic",
        "cudnn_benchmark",
        "deterministic_algorithms",
    }
    varying = [
        k
        for k in CELL_SETTINGS
        if k not in core and len({canonical_json(s[k]) for s in all_settings}) > 1
    ]
    names = []
    for s in all_settings:
        parts = [
            _short_image(s["image"]),
            f"{s['accelerator']}{s['devices']}",
            s["placement"],
            f"det{int(s['cudnn_deterministic'])}",
            f"bench{int(s['cudnn_benchmark'])}",
            f"alg{s['deterministic_algorithms']}",
        ]
        parts += [f"{_ABBREV.get(k, k)}{_slug(str(s[k]))}" for k in varying]
        names.append("-".join(parts))
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return [
        n if counts[n] == 1 else f"{n}-{cell_id(s)[:6]}"
        for n, s in zip(names, all_settings, strict=True)
    ]


_ABBREV = {
    "threads": "t",
    "seed": "seed",
    "epochs": "ep",
    "max_steps_per_epoch": "steps",
    "allow_tf32": "tf32",
    "pythonhashseed": "phs",
    "batch_size": "bs",
    "learning_rate": "lr",
    "hidden_size": "h",
}


# ---------------------------------------------------------------- loading + validation


def load_matrix(path: str | Path) -> LoadedMatrix:
    """Read, validate and expand a matrix file; every problem is a MatrixError with file:line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MatrixError(
            f"{path}: cannot read the matrix file ({exc.strerror})",
            "give the path of a matrix YAML file, e.g. examples/placement-quick.yaml",
        ) from exc
    return parse_matrix(text, path)


def parse_matrix(text: str, path: Path) -> LoadedMatrix:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            line = mark.line + 1
        else:  # a ReaderError (a control character, bad UTF-8) gives a position, not a mark
            line = text.count("\n", 0, getattr(exc, "position", 0) or 0) + 1
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        raise MatrixError(
            f"{path}:{line}: YAML syntax error: {problem}",
            "check the indentation and quoting on that line",
        ) from exc
    except RecursionError as exc:
        raise MatrixError(
            f"{path}:1: the YAML is nested too deeply to read",
            "a matrix is a few levels deep: name, run, axes, include, exclude",
        ) from exc
    if not isinstance(data, dict):
        raise MatrixError(
            f"{path}:1: the matrix must be a mapping with name, run and axes",
            "start from examples/placement-quick.yaml",
        )
    _check_duplicate_keys(root, path)
    try:
        model = Matrix.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, root, path, data) from exc
    _check_product(model, root, path)
    combos = expand(model)
    if not combos:
        raise MatrixError(
            f"{path}:1: the matrix has no cells",
            "give at least one axis, or include entries, and check exclude",
        )
    total = len(combos) * model.run.repeats
    if total > model.run.max_runs:  # before the cells are built: that is the slow part
        raise MatrixError(
            f"{_where(path, root, ('run', 'repeats'))}: the matrix has {len(combos)} cells x "
            f"{model.run.repeats} repeats = {total} runs, more than run.max_runs "
            f"({model.run.max_runs})",
            f"if you mean it, raise it: run: {{max_runs: {total}}}",
        )
    try:
        cells = make_cells(model, combos)
    except ValidationError as exc:  # a combination the parts allowed but the whole does not
        raise MatrixError(
            f"{_where(path, root, ('axes',))}: a cell's settings are invalid: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
            "see docs/matrix.md for each key's type",
        ) from exc
    _check_duplicates(model, cells, combos, root, path)
    loaded = LoadedMatrix(path, text, model, cells)
    return loaded


#: The axes may multiply to this many times run.max_runs before exclude is applied; beyond it
#: the matrix is refused before it is expanded (expanding 10^10 combinations never ends).
PRODUCT_SLACK = 10


def _check_product(model: Matrix, root: yaml.Node | None, path: Path) -> None:
    axes = [v for v in model.axes.model_dump(exclude_unset=True).values() if v is not None]
    combos = math.prod(len(v) for v in axes) if axes else 0
    bound = (combos + len(model.include)) * model.run.repeats
    if bound > PRODUCT_SLACK * model.run.max_runs:
        raise MatrixError(
            f"{_where(path, root, ('axes',))}: the axes multiply to {combos} combinations "
            f"(x {model.run.repeats} repeats), far more than run.max_runs "
            f"({model.run.max_runs}) even before exclude",
            f"shorten the axes; if you mean it, raise it: run: {{max_runs: {bound}}}",
        )


def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """The deepest YAML node on the path ``loc`` (pydantic's error location); a key's own node
    when the path ends at a mapping key, so an unknown key points at its own line."""
    node = root
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                return node
            node = pair[0] if last else pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _where(path: Path, root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    node = _node_at(root, loc)
    line = node.start_mark.line + 1 if node is not None else 1
    return f"{path}:{line}"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    if not loc:
        return list(Matrix.model_fields)
    top = loc[0]
    if top == "run":
        return list(RunBlock.model_fields)
    if top == "axes":
        return list(Axes.model_fields)
    return list(Patch.model_fields)


def _choices(field: str) -> str | None:
    values = {
        "placement": Placement,
        "deterministic_algorithms": Algorithms,
        "accelerator": Accelerator,
    }.get(field)
    if values is None:
        return None
    return ", ".join(repr(v) for v in values.__args__)


def _validation_error(
    exc: ValidationError, root: yaml.Node | None, path: Path, data: dict[str, Any]
) -> MatrixError:
    lines = []
    hints = []
    for err in exc.errors():
        raw = tuple(err["loc"])
        kind = err["type"]
        # Drop pydantic's own type tags (``list[...]``) from the path, never the user's key.
        keep_last = kind == "extra_forbidden" and bool(raw)
        inner = raw[:-1] if keep_last else raw
        loc = tuple(p for p in inner if not (isinstance(p, str) and "[" in p))
        loc += raw[-1:] if keep_last else ()
        dotted = ".".join(str(p) for p in loc)
        where = _where(path, root, loc)
        field = next((p for p in reversed(loc) if isinstance(p, str)), "")
        if kind == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            parent = ".".join(map(str, loc[:-1])) or "the top level"
            lines.append(f"{where}: unknown key {loc[-1]!r} in {parent}")
            hints.append(
                (f"did you mean {close[0]!r}? " if close else "")
                + f"allowed here: {', '.join(allowed)}"
            )
        elif kind == "too_short":
            lines.append(f"{where}: {dotted} is empty")
            hints.append(f"give {field} at least one value, e.g. {field}: [...], or remove it")
        elif kind == "missing":
            lines.append(f"{where}: {dotted} is missing")
            hints.append(f"add {field}: ... (see docs/matrix.md)")
        else:
            got = reprlib.repr(err.get("input"))
            if kind == "string_pattern_mismatch" and field == "image":
                lines.append(f"{where}: {dotted}: not a Docker image reference (got {got})")
            else:
                lines.append(f"{where}: {dotted}: {err['msg']} (got {got})")
            choices = _choices(field)
            if kind == "string_pattern_mismatch" and field == "image":
                hints.append(
                    "image takes local or a reference like nvcr.io/nvidia/pytorch:24.01-py3 "
                    "(lowercase path, optional :tag and @sha256:digest)"
                )
            elif choices:
                hint = f"{field} takes one of {choices}"
                if isinstance(err.get("input"), bool):
                    hint += '; YAML reads bare off/on/yes/no as booleans, so quote them: "off"'
                hints.append(hint)
            elif "bool" in kind:
                hints.append(f"{field} takes true or false")
            elif "int" in kind:
                hints.append(f"{field} takes a whole number, without quotes")
            else:
                hints.append("see docs/matrix.md for each key's type")
    problems = sorted(zip(lines, hints, strict=True), key=lambda p: _line_of(p[0]))
    message = "invalid matrix:\n" + "\n".join(
        f"  {line}\n    fix: {hint}" for line, hint in problems
    )
    return MatrixError(
        message, "docs/matrix.md lists every key; `harness schema` prints the schema"
    )


def _line_of(text: str) -> int:
    match = re.match(r"^.*?:(\d+):", text)
    return int(match.group(1)) if match else 0


def _check_duplicate_keys(root: yaml.Node | None, path: Path) -> None:
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if key.value in seen:
                    raise MatrixError(
                        f"{path}:{key.start_mark.line + 1}: key {key.value!r} appears twice",
                        "keep one of them; YAML would silently use the last",
                    )
                seen.add(key.value)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _check_duplicates(
    model: Matrix,
    cells: list[Cell],
    combos: list[dict[str, Any]],
    root: yaml.Node | None,
    path: Path,
) -> None:
    axes = model.axes.model_dump(exclude_unset=True)
    for name, values in axes.items():
        seen: set[str] = set()  # a set: a 10,000-value axis must not take minutes
        for i, v in enumerate(values or []):
            if canonical_json(v) in seen:
                raise MatrixError(
                    f"{_where(path, root, ('axes', name, i))}: axes.{name} lists {v!r} twice, "
                    "which makes duplicate cells",
                    f"list each value of {name} once",
                )
            seen.add(canonical_json(v))
    first: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if cell.id in first:
            loc: tuple[Any, ...] = ("include",)
            includes = [i.model_dump(exclude_unset=True) for i in model.include]
            for j, entry in enumerate(includes):
                if entry == combos[index]:
                    loc = ("include", j)
            raise MatrixError(
                f"{_where(path, root, loc)}: duplicate cell {cell.name} ({cell.id}): the same "
                f"settings as cell #{first[cell.id] + 1}",
                "remove the include entry, or change one of its values; settings equal to their "
                "default count as the same cell",
            )
        first[cell.id] = index


def json_schema() -> dict[str, Any]:
    schema = Matrix.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "harness matrix"
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
