"""The cells a matrix expands to: their order, settings, names and ids, the run spec each repeat
gets, and the matrix digest that resume compares (docs/matrix.md, "include and exclude" and
"Cell ids and names")."""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.contract.spec import RunSpec
from harness.matrix import load_matrix, parse_matrix

ROOT = Path(__file__).resolve().parents[1]
PATH = Path("m.yaml")

#: Every rule at once: run: defaults, an exclude on a key no combination has (removes nothing),
#: includes extending several cells and overwriting what an earlier include added, an include
#: contradicting every combination (a new cell), images named by their last path part.
NAMES = """name: names
run: {repeats: 2, threads: 3, seed: 7, timeout_s: 60, max_runs: 50, memory_limit: 4g}
axes:
  image: ['ghcr.io/org/work:2.4', 'nvcr.io/nvidia/pytorch:24.01-py3']
  cudnn_benchmark: [false, true]
  learning_rate: [1e-05]
exclude:
  - {image: 'nvcr.io/nvidia/pytorch:24.01-py3', cudnn_benchmark: true}
  - {threads: 3}
include:
  - {cudnn_benchmark: true, threads: 2}
  - {cudnn_benchmark: true, threads: 4, allow_tf32: true}
  - {image: local, learning_rate: 0.5}
"""

COMMON = {
    "accelerator": "cpu",
    "devices": 1,
    "placement": "before_model",
    "model": "mlp",
    "cudnn_deterministic": True,
    "deterministic_algorithms": "off",
    "cublas_workspace": "auto",
    # the CPU code path as the machine gives it (issue 27): no ceiling
    "cpu_isa": "native",
    "seed": 7,
    "epochs": 1,
    "max_steps_per_epoch": None,
    "pythonhashseed": 0,
    "batch_size": 32,
    "hidden_size": 64,
    # the built-in MNIST experiment: no build function, no params (issue 16)
    "entry": None,
    "params": {},
}


def cell(image: str, bench: bool, threads: int, tf32: bool, lr: float) -> dict:
    return {
        **COMMON,
        "image": image,
        "cudnn_benchmark": bench,
        "threads": threads,
        "allow_tf32": tf32,
        "learning_rate": lr,
    }


def test_the_whole_expansion_names_ids_and_settings():
    loaded = parse_matrix(NAMES, PATH)
    got = [(c.name, c.id, c.settings) for c in loaded.cells]
    ghcr, nvcr = "ghcr.io/org/work:2.4", "nvcr.io/nvidia/pytorch:24.01-py3"
    assert got == [
        (
            "work-2.4-cpu1-before_model-det1-bench0-algoff-t3-tf320-lr1e-05",
            "4340a70e7067",
            cell(ghcr, False, 3, False, 1e-05),
        ),
        (
            "work-2.4-cpu1-before_model-det1-bench1-algoff-t4-tf321-lr1e-05",
            "4dbb079be3cb",
            cell(ghcr, True, 4, True, 1e-05),
        ),
        (
            "pytorch-24.01-py3-cpu1-before_model-det1-bench0-algoff-t3-tf320-lr1e-05",
            "1d4fdcfc2700",
            cell(nvcr, False, 3, False, 1e-05),
        ),
        (
            "local-cpu1-before_model-det1-bench0-algoff-t3-tf320-lr0.5",
            "a7be55eea0ba",
            cell("local", False, 3, False, 0.5),
        ),
    ]
    assert loaded.total_runs == 8


def test_include_only_matrix_makes_just_its_entries():
    """No axes: no default cell, only the include entries, each over the defaults."""
    loaded = parse_matrix(
        "name: inc\ninclude:\n  - {placement: none}\n  - {devices: 2, seed: 1}\n", PATH
    )
    assert [(c.name, c.id) for c in loaded.cells] == [
        ("local-cpu1-none-det1-bench0-algoff-seed201014", "2cacd3f31a5b"),
        ("local-cpu2-before_model-det1-bench0-algoff-seed1", "2d3d5c45d637"),
    ]


def test_names_that_collide_get_the_id_as_suffix():
    text = "name: coll\nrun: {repeats: 1}\naxes:\n  image: ['a/x:1', 'b/x:1', 'local']\n"
    assert [(c.name, c.id) for c in parse_matrix(text, PATH).cells] == [
        ("x-1-cpu1-before_model-det1-bench0-algoff-137cbd", "137cbd0a6825"),
        ("x-1-cpu1-before_model-det1-bench0-algoff-2aaf40", "2aaf40504afc"),
        ("local-cpu1-before_model-det1-bench0-algoff", "ce90aff5781e"),
    ]


def test_slots_are_named_in_order_and_extras_in_table_order():
    text = (
        "name: order\nrun: {repeats: 1}\naxes:\n  max_steps_per_epoch: [null, 5]\n"
        "  deterministic_algorithms: ['on']\n  accelerator: [gpu]\n  devices: [2]\n"
        "  cudnn_deterministic: [false]\n  placement: [process_start]\n"
        "  hidden_size: [8, 16]\n  image: ['reg.io:5000/a/b_c:v1.0@sha256:" + "0" * 64 + "']\n"
    )
    names = [c.name for c in parse_matrix(text, PATH).cells]
    image = "b_c-v1.0-sha256-" + "0" * 64
    assert names == [
        f"{image}-gpu2-process_start-det0-bench0-algon-stepsNone-h8",
        f"{image}-gpu2-process_start-det0-bench0-algon-stepsNone-h16",
        f"{image}-gpu2-process_start-det0-bench0-algon-steps5-h8",
        f"{image}-gpu2-process_start-det0-bench0-algon-steps5-h16",
    ]


def test_each_repeat_gets_the_cells_spec():
    first = parse_matrix(NAMES, PATH).cells[0]
    spec = first.spec(1)
    assert spec == RunSpec(
        **cell("ghcr.io/org/work:2.4", False, 3, False, 1e-05),
        repeat=1,
        cell_id="4340a70e7067",
        cell_name="work-2.4-cpu1-before_model-det1-bench0-algoff-t3-tf320-lr1e-05",
    )
    assert spec.to_dict()["repeat"] == 1 and first.spec(0).repeat == 0


def test_the_digest_is_what_the_matrix_runs_not_its_limits():
    quick = load_matrix(ROOT / "examples" / "placement-quick.yaml")
    assert quick.digest == "15a957eb05d60a7052c495fc086403089914d0cd48fee9e32446e5e483745b54"
    assert quick.total_runs == 6
    loaded = parse_matrix(NAMES, PATH)
    assert loaded.digest == "83022e16fd22595a32523f5a6aab4e08eb20a6d0bd56bb50a7d5835fe4f01d65"
    assert loaded.text_sha256 == hashlib.sha256(NAMES.encode()).hexdigest()
    # raising a limit on resume keeps the digest; what runs changes it
    limits = NAMES.replace("timeout_s: 60, max_runs: 50, memory_limit: 4g", "max_runs: 60")
    assert parse_matrix(limits, PATH).digest == loaded.digest
    assert parse_matrix(limits, PATH).text_sha256 != loaded.text_sha256
    assert parse_matrix(NAMES.replace("repeats: 2", "repeats: 3"), PATH).digest != loaded.digest
    assert parse_matrix(NAMES.replace("seed: 7", "seed: 8"), PATH).digest != loaded.digest


def test_a_null_axis_is_no_axis():
    text = "name: t\nrun: {repeats: 1}\naxes:\n  seed: null\n  placement: [none]\n"
    assert [(c.name, c.id) for c in parse_matrix(text, PATH).cells] == [
        ("local-cpu1-none-det1-bench0-algoff", "2cacd3f31a5b")
    ]


def test_image_tags_are_trimmed_in_names():
    """A tag's leading or trailing '.' or '-' is dropped from the name; letters are kept."""
    text = (
        "name: t\nrun: {repeats: 1}\naxes:\n  image: ['a/b:v1.', 'a/c:v2-', 'a/d:_e', 'a/e:1.X']\n"
    )
    assert [(c.name, c.id) for c in parse_matrix(text, PATH).cells] == [
        ("b-v1-cpu1-before_model-det1-bench0-algoff", "278c3089e93a"),
        ("c-v2-cpu1-before_model-det1-bench0-algoff", "bec5ea1b71a6"),
        ("d-_e-cpu1-before_model-det1-bench0-algoff", "d14f624cfa6e"),
        ("e-1.X-cpu1-before_model-det1-bench0-algoff", "5ec05b663603"),
    ]
