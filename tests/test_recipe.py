"""The recipe per image (harness/report/recipe.py) on hand-made records with known answers:
the fastest reproducing cell and its cost, the settings the matrix shows are required, the
nearest cell where none reproduces, and the code a user pastes (compiled, never run)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_report import base_losses, make_cell, make_results, write_run

from harness.contract import RunSpec
from harness.contract.settings import DEFAULTS
from harness.report import analyze
from harness.report.recipe import median_seconds, recipe_code, recipes

VAL_SECONDS = 0.5  # write_run's per epoch; train_seconds is set so that the sum is the time


def timed_run(root: Path, cell: dict, repeat: int, losses: np.ndarray, seconds: float) -> None:
    """write_run, then each epoch timed at ``seconds`` (train + validation)."""
    write_run(root, cell, repeat, losses)
    path = root / cell["dir"] / f"repeat-{repeat}" / "run.json"
    record = json.loads(path.read_text())
    for epoch in record["epochs"]:
        epoch["train_seconds"] = seconds - VAL_SECONDS
    path.write_text(json.dumps(record))


def diverging(step: int, repeat: int) -> np.ndarray:
    """The base losses, changed at ``step`` from repeat 1 on (each repeat its own change)."""
    losses = base_losses()
    if repeat:
        losses[step, 0] += np.float32(0.01 * repeat)
    return losses


def write_cell(root: Path, cell: dict, times: list[float], step: int | None = None) -> None:
    """One repeat per time: identical repeats, or repeats that part at ``step``."""
    for k, seconds in enumerate(times):
        losses = base_losses() if step is None else diverging(step, k)
        timed_run(root, cell, k, losses, seconds)


LOCAL = "local"
OTHER = "ghcr.io/example/torch:2.3"


@pytest.fixture
def cells(tmp_path: Path):
    """On local: placement before_model reproduces (threads 1 and 2), none diverges; tf32 on
    has no verdict; none + det=false (two settings flipped) diverges. On OTHER nothing reproduces.
    On a third image the only cell has no verdict."""
    third = "ghcr.io/example/torch:2.4"
    m = {
        "a": make_cell("a", threads=1),
        "b": make_cell("b", threads=2),
        "c": make_cell("c", threads=1, placement="none"),
        "d": make_cell("d", threads=2, placement="none"),
        "e": make_cell("e", threads=1, allow_tf32=True),
        "f": make_cell("f", threads=1, placement="none", cudnn_deterministic=False),
        "h": make_cell("h", image=OTHER, placement="none", threads=2),
        "g": make_cell("g", image=OTHER, placement="none", threads=1),
        "i": make_cell("i", image=OTHER, placement="none", threads=3),
        "j": make_cell("j", image=third),
    }
    make_results(tmp_path, list(m.values()), repeats=3)
    write_cell(tmp_path, m["a"], [2.0, 2.0, 2.0])
    write_cell(tmp_path, m["b"], [1.5, 1.4, 9.0])  # median 1.5 (the mean would be 3.97)
    write_cell(tmp_path, m["c"], [1.4, 1.4, 1.4], step=30)
    write_cell(tmp_path, m["d"], [1.2, 1.2, 1.2], step=50)
    write_cell(tmp_path, m["e"], [2.5, 2.5])  # repeat 2 missing: no verdict
    write_cell(tmp_path, m["f"], [3.0, 3.0, 3.0], step=10)
    write_cell(tmp_path, m["h"], [1.0, 1.0, 1.0], step=40)  # 3 distinct trajectories
    write_cell(tmp_path, m["g"], [1.0, 1.0], step=40)  # 2 distinct: ties h, nearer
    write_run(tmp_path, m["g"], 2, base_losses())
    write_cell(tmp_path, m["i"], [1.0, 1.0, 1.0], step=20)
    write_cell(tmp_path, m["j"], [1.0])
    return analyze(tmp_path).cells


def by_image(found) -> dict:
    return {r.image: r for r in found}


def test_the_fastest_reproducing_cell_and_its_cost(cells):
    verdicts = {c.name: c.verdict for c in cells}
    assert [verdicts[n] for n in "abcdef"] == [
        "reproduces",
        "reproduces",
        "diverges",
        "diverges",
        "unknown",
        "diverges",
    ]
    assert median_seconds(next(c for c in cells if c.name == "b")) == pytest.approx(1.5)
    recipe = by_image(recipes(cells))[LOCAL]
    assert (recipe.cell, recipe.fastest_cell) == ("b", "d")  # d diverges: still the fastest
    assert recipe.cell_id == next(c.id for c in cells if c.name == "b")
    assert recipe.seconds_per_epoch == pytest.approx(1.5)
    assert recipe.fastest_seconds_per_epoch == pytest.approx(1.2)
    assert recipe.cost_ratio == pytest.approx(1.5 / 1.2)
    assert (recipe.settings["placement"], recipe.settings["threads"]) == ("before_model", 2)
    assert recipe.settings["seed"] == RunSpec().seed
    assert recipe.sentence.startswith(
        "On local, placement=before_model, cudnn_deterministic=true, threads=2, allow_tf32=false "
        "reproduces"
    )
    assert "at 1.50 s/epoch (median), ×1.25 the fastest cell's (d)" in recipe.sentence
    assert recipe.sentence.endswith("; it needs placement=before_model.")
    assert "\n" not in recipe.sentence


def test_required_only_where_flipping_it_alone_diverges(cells):
    """placement: c and d are a and b with placement alone flipped, and diverge. allow_tf32
    is False in every reproducing cell, but its flip (e) has no verdict; det=false (f) comes
    with placement flipped too; cudnn_benchmark never varies: none of them is required."""
    recipe = by_image(recipes(cells))[LOCAL]
    assert [(r.setting, r.value, r.broken_by) for r in recipe.required] == [
        ("placement", "before_model", ["c", "d"])
    ]


def test_controls_are_left_out(cells):
    """A control cell is no recipe, nor the fastest cell."""
    marked = [dataclasses.replace(c, control=c.name in ("b", "d")) for c in cells]
    recipe = by_image(recipes(marked))[LOCAL]
    assert (recipe.cell, recipe.fastest_cell) == ("a", "c")
    assert recipe.cost_ratio == pytest.approx(2.0 / 1.4)
    assert [r.broken_by for r in recipe.required] == [["c"]]


def test_nothing_reproduces_names_the_nearest(cells):
    """g and h part at step 40 (i at 20); g has fewer distinct trajectories than h."""
    found = recipes(cells)
    assert [r.image for r in found] == [LOCAL, OTHER, "ghcr.io/example/torch:2.4"]
    recipe = by_image(found)[OTHER]
    assert (recipe.cell, recipe.nearest, recipe.code, recipe.env) == (None, "g", "", {})
    assert recipe.sentence == (
        f"On {OTHER}, no cell reproduces; the nearest is g (its repeats agree until step 40)."
    )
    empty = by_image(found)["ghcr.io/example/torch:2.4"]
    assert (empty.cell, empty.nearest) == (None, None)
    assert "no cell has a verdict" in empty.sentence


def test_a_recipe_per_training_where_an_image_trains_two_models(tmp_path: Path):
    """The fastest reproducing mlp is no recipe for a cnn: one recipe per model, each with
    its own cost and what it needs."""
    m = {
        "mlp": make_cell("mlp", model="mlp"),
        "cnn": make_cell("cnn", model="cnn"),
        "cnn-none": make_cell("cnn-none", model="cnn", placement="none"),
    }
    make_results(tmp_path, list(m.values()), repeats=2)
    write_cell(tmp_path, m["mlp"], [1.0, 1.0])
    write_cell(tmp_path, m["cnn"], [4.0, 4.0])
    write_cell(tmp_path, m["cnn-none"], [3.0, 3.0], step=5)
    found = recipes(analyze(tmp_path).cells)
    assert [(r.workload, r.cell, r.fastest_cell) for r in found] == [
        ({"model": "mlp"}, "mlp", "mlp"),
        ({"model": "cnn"}, "cnn", "cnn-none"),
    ]
    assert found[1].cost_ratio == pytest.approx(4.0 / 3.0)
    assert [(r.setting, r.broken_by) for r in found[1].required] == [("placement", ["cnn-none"])]
    assert found[1].sentence.startswith("On local (model=cnn), placement=before_model reproduces")


def test_withheld_image_has_no_recipe(cells):
    found = by_image(recipes(cells, withheld={LOCAL: "its control cell reproduced"}))
    recipe = found[LOCAL]
    assert (recipe.cell, recipe.withheld, recipe.code) == (None, "its control cell reproduced", "")
    assert recipe.sentence == "On local, no recipe: its control cell reproduced."
    assert found[OTHER].nearest == "g"  # another image keeps its answer


def test_recipe_code_of_a_found_recipe(cells):
    recipe = by_image(recipes(cells))[LOCAL]
    compile(recipe.code, "<recipe>", "exec")
    assert "torch.set_num_threads(2)" in recipe.code
    assert f"torch.manual_seed({RunSpec().seed})" in recipe.code
    assert 'L.Trainer(accelerator="cpu", devices=1)' in recipe.code
    assert recipe.env == {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


GPU = {
    "image": OTHER,
    "accelerator": "gpu",
    "devices": 2,
    "placement": "before_trainer",
    "cudnn_deterministic": True,
    "cudnn_benchmark": False,
    "deterministic_algorithms": "on",
    "cublas_workspace": "auto",
    "threads": 3,
    "allow_tf32": True,
    "cpu_isa": "avx2",
    "seed": 7,
    "pythonhashseed": 5,
    "model": "cnn",
}


def test_recipe_code_carries_every_value():
    code, env = recipe_code(GPU)
    compile(code, "<recipe>", "exec")
    assert len(code.splitlines()) <= 30
    assert env == {
        "PYTHONHASHSEED": "5",
        "OMP_NUM_THREADS": "3",
        "MKL_NUM_THREADS": "3",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "MKL_CBWR": "AVX2",
    }
    for name, value in env.items():
        assert f"# before Python starts: export {name}={value}\n" in code
    for line in (
        "import lightning as L  # or: import pytorch_lightning as L",
        "torch.set_num_threads(3)",
        "torch.set_num_interop_threads(1)",
        "torch.backends.cudnn.deterministic = True",
        "torch.backends.cudnn.benchmark = False",
        "torch.backends.cuda.matmul.allow_tf32 = True",
        "torch.backends.cudnn.allow_tf32 = True",
        "torch.use_deterministic_algorithms(True)",
        "torch.manual_seed(7)",
        "torch.cuda.manual_seed_all(7)",
        "np.random.seed(7)",
        "random.seed(7)",
        'trainer = L.Trainer(accelerator="gpu", devices=2, strategy="ddp")',
    ):
        assert line in code.splitlines()
    assert "built-in cnn" in code
    lines = code.splitlines()
    # before_trainer: the seed after the model, before the Trainer
    seed_at = lines.index(next(x for x in lines if x.startswith("torch.manual_seed(7)")))
    assert lines.index("model = YourModule()  # the harness trained its built-in cnn") < seed_at
    assert seed_at < lines.index(next(x for x in lines if x.startswith("trainer =")))


def test_recipe_code_places_the_seed_as_the_workload_does():
    def seed_line(code: str) -> int:
        return next(i for i, x in enumerate(code.splitlines()) if x.startswith("torch.manual_seed"))

    def line_of(code: str, start: str) -> int:
        return next(i for i, x in enumerate(code.splitlines()) if x.startswith(start))

    first, _ = recipe_code({**GPU, "placement": "process_start"})
    assert seed_line(first) < line_of(first, "torch.backends.cudnn.deterministic")
    assert seed_line(first) > line_of(first, "torch.set_num_threads")
    before, _ = recipe_code({**GPU, "placement": "before_model"})
    assert line_of(before, "torch.use_deterministic_algorithms") < seed_line(before)
    assert seed_line(before) < line_of(before, "model =")
    never, _ = recipe_code({**GPU, "placement": "none"})
    compile(never, "<recipe>", "exec")
    assert "manual_seed" not in never and never.count("placement=none") == 1
    for code in (first, before):  # seeded once, where the workload seeds
        assert code.count("torch.manual_seed(") == 1


def test_recipe_code_flags_off_and_warn():
    off, env = recipe_code({**GPU, "deterministic_algorithms": "off", "devices": 1})
    assert "CUBLAS_WORKSPACE_CONFIG" not in env and "CUBLAS_WORKSPACE_CONFIG" not in off
    assert "torch.use_deterministic_algorithms(False)" in off.splitlines()
    assert 'trainer = L.Trainer(accelerator="gpu", devices=1)' in off.splitlines()
    warn, env = recipe_code({**GPU, "deterministic_algorithms": "warn", "cpu_isa": "native"})
    assert "torch.use_deterministic_algorithms(True, warn_only=True)" in warn.splitlines()
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and "ATEN_CPU_CAPABILITY" not in env
    bench, _ = recipe_code({**GPU, "cudnn_benchmark": True})
    assert "torch.backends.cudnn.benchmark = True" in bench.splitlines()
    unset, env = recipe_code({**GPU, "cublas_workspace": "unset"})
    assert "CUBLAS_WORKSPACE_CONFIG" not in env


def test_recipe_code_of_a_build_function_is_inert_markdown():
    """A params string may hold anything: none reaches the code (named, not shown), no
    backtick reaches the fence, the code compiles."""
    hostile = "```\n# done\n```python\nimport os"
    settings = {**GPU, "entry": "convnet:build", "params.note": hostile, "params.lr": 0.001}
    del settings["model"]
    code, _ = recipe_code(settings)
    compile(code, "<recipe>", "exec")
    assert "`" not in code
    assert len(code.splitlines()) <= 30
    comment = next(x for x in code.splitlines() if "convnet:build" in x)
    assert comment.startswith("# the model: your build function convnet:build with params")
    assert comment.endswith("with params lr=0.001, note=(text)")
    # a raw params mapping is read the same way
    raw, _ = recipe_code({**GPU, "entry": "convnet:build", "params": {"note": hostile}})
    assert "`" not in raw and "import os" not in raw and "note=(text)" in raw


def test_the_code_a_user_pastes_is_formatted_as_ruff_formats_it():
    """Pasted into a project that runs ``ruff format --check``, the snippet changes nothing."""
    for placement in ("process_start", "before_model", "before_trainer", "none"):
        code, _ = recipe_code({**GPU, "placement": placement})
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", "format", "--diff", "-"],
            input=code,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_nearest_is_a_cell_whose_losses_agree_at_every_step(tmp_path: Path):
    """No cell reproduces: one parts at step 90, the other's losses agree throughout and
    only its final weights differ: that one is nearer, and the sentence says why."""
    m = {"late": make_cell("late", threads=2), "weights": make_cell("weights", threads=1)}
    make_results(tmp_path, list(m.values()), repeats=2)
    write_cell(tmp_path, m["late"], [1.0, 1.0], step=90)
    for k in range(2):
        write_run(tmp_path, m["weights"], k, base_losses(), final=f"w{k}")
    cells = analyze(tmp_path).cells
    assert [c.verdict for c in cells] == ["diverges", "diverges"]
    (recipe,) = recipes(cells)
    assert (recipe.cell, recipe.nearest) == (None, "weights")
    assert recipe.sentence == (
        "On local, no cell reproduces; the nearest is weights (its repeats' losses agree at "
        "every step, its final weights do not)."
    )


def untimed_run(root: Path, cell: dict, repeat: int) -> None:
    """write_run, then no epoch timed and no wall time: the run's time is unknown."""
    write_run(root, cell, repeat, base_losses())
    path = root / cell["dir"] / f"repeat-{repeat}" / "run.json"
    record = json.loads(path.read_text())
    for epoch in record["epochs"]:
        epoch["train_seconds"] = None
    record["timing"]["wall_seconds"] = None
    path.write_text(json.dumps(record))


def test_a_lone_reproducing_cell_is_named_and_is_the_fastest(tmp_path: Path):
    """Nothing varies: the recipe names its cell, and it is the fastest there."""
    cell = make_cell("only", threads=1)
    make_results(tmp_path, [cell], repeats=2)
    write_cell(tmp_path, cell, [2.0, 2.0])
    (recipe,) = recipes(analyze(tmp_path).cells)
    assert recipe.sentence == (
        "On local, only reproduces at 2.00 s/epoch (median), the fastest cell there."
    )


def test_a_recipe_whose_time_was_not_recorded_says_so(tmp_path: Path):
    cell = make_cell("only", threads=1)
    make_results(tmp_path, [cell], repeats=2)
    for k in range(2):
        untimed_run(tmp_path, cell, k)
    (recipe,) = recipes(analyze(tmp_path).cells)
    assert (recipe.cell, recipe.seconds_per_epoch, recipe.cost_ratio) == ("only", None, None)
    assert recipe.sentence == "On local, only reproduces (its time was not recorded)."


def test_a_recipe_as_fast_as_the_fastest_cell_is_the_fastest(tmp_path: Path):
    """A diverging cell first in the matrix ties the recipe's time: no ×1.00 to pay."""
    m = {"none": make_cell("none", placement="none"), "seeded": make_cell("seeded")}
    make_results(tmp_path, list(m.values()), repeats=2)
    write_cell(tmp_path, m["none"], [1.5, 1.5], step=5)
    write_cell(tmp_path, m["seeded"], [1.5, 1.5])
    (recipe,) = recipes(analyze(tmp_path).cells)
    assert (recipe.cell, recipe.fastest_cell, recipe.cost_ratio) == ("seeded", "none", 1.0)
    assert recipe.sentence == (
        "On local, placement=before_model reproduces at 1.50 s/epoch (median), the fastest "
        "cell there; it needs placement=before_model."
    )


def test_every_required_setting_is_said(tmp_path: Path):
    """Two settings each break the recipe alone: both are required, both said."""
    m = {
        "ok": make_cell("ok", cudnn_deterministic=True),
        "none": make_cell("none", placement="none", cudnn_deterministic=True),
        "nondet": make_cell("nondet", cudnn_deterministic=False),
    }
    make_results(tmp_path, list(m.values()), repeats=2)
    write_cell(tmp_path, m["ok"], [2.0, 2.0])
    write_cell(tmp_path, m["none"], [1.0, 1.0], step=5)
    write_cell(tmp_path, m["nondet"], [1.0, 1.0], step=7)
    (recipe,) = recipes(analyze(tmp_path).cells)
    assert [(r.setting, r.broken_by) for r in recipe.required] == [
        ("placement", ["none"]),
        ("cudnn_deterministic", ["nondet"]),
    ]
    assert recipe.sentence.endswith("; it needs placement=before_model, cudnn_deterministic=true.")


def test_a_setting_left_out_is_its_default_in_the_code():
    """Settings an older record lacks are the defaults it ran with: the same code."""
    assert recipe_code({}) == recipe_code(dict(DEFAULTS))
    assert "torch.set_num_threads(1)" in recipe_code({})[0].splitlines()


def test_recipe_code_of_a_build_function_without_params():
    settings = {**GPU, "entry": "convnet:build", "params": {}}
    del settings["model"]
    lines = recipe_code(settings)[0].splitlines()
    at = lines.index("# the model: your build function convnet:build with params none")
    assert lines[at + 1] == "model = YourModule()"
