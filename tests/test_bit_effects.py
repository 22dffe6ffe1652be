"""What changes the bits (issue 31), on hand-made run records with known answers: a setting that
never changes them, one that always does (at the step planted here), one that does on one image
only, pairs across machines reported apart, pairs with a diverging cell left unjudged, control
cells left out, and a cell whose repeats ran on two machines (the machine row)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from test_machine_units import AVX2, machine
from test_report import base_losses, make_cell, make_results, write_run

from harness.contract.machine import Machine
from harness.report import analyze
from harness.report.bit_effects import what_changes_bits

#: the row of the machine's own effect, as the report names it
MACHINE_ROW = "machine"


def planted(step: int, base: np.ndarray | None = None) -> np.ndarray:
    """The base trajectory with one ULP changed at ``step`` (and nothing before it)."""
    losses = (base_losses() if base is None else base).copy()
    losses[step, 0] = np.nextafter(losses[step, 0], np.float32(10))
    return losses


def on(m: Machine) -> dict:
    """A record's provenance: it ran on machine ``m``."""
    return {"machine": dataclasses.asdict(m)}


def gpu(name: str, sm_count: int) -> dict:
    """A record's provenance: it ran on one GPU of this model and SM count."""
    device = {"index": 0, "name": name, "capability": "9.0", "memory_bytes": 1, "uuid": "u"}
    return {"gpus": [{**device, "sm_count": sm_count, "pci_bus_id": None}]}


def write_cells(root: Path, trajectories: dict[str, tuple[dict, list]], repeats: int = 2) -> None:
    """Each cell (name -> (settings, per repeat a trajectory or (trajectory, provenance)))."""
    cells = {name: make_cell(name, **settings) for name, (settings, _) in trajectories.items()}
    make_results(root, list(cells.values()), repeats=repeats)
    for name, (_, runs) in trajectories.items():
        for k, run in enumerate(runs):
            losses, where = run if isinstance(run, tuple) else (run, None)
            write_run(root, cells[name], k, losses, provenance=where)


def effects(root: Path, control: tuple[str, ...] = ()) -> dict:
    cells = analyze(root).cells
    for c in cells:
        c.control = c.name in control
    return {e.setting: e for e in what_changes_bits(cells)}


def test_a_setting_that_always_changes_the_bits_and_one_that_never_does(tmp_path: Path):
    base, other = base_losses(), planted(17)
    write_cells(
        tmp_path,
        {
            f"t{t}-b{int(b)}": ({"threads": t, "cudnn_benchmark": b}, [traj, traj])
            for t, traj in ((1, base), (2, other))
            for b in (False, True)
        },
    )
    found = effects(tmp_path)
    assert list(found) == ["cudnn_benchmark", "threads"]  # table order; one image: no image row
    threads = found["threads"]
    assert (threads.effect, threads.pairs, threads.changed, threads.first_step) == (
        "always",
        2,
        2,
        17,
    )
    assert threads.sentence == "threads: changes the bits in 2 of 2 pairs (first at step 17)"
    assert {(p.cells, p.values, p.equal, p.first_step) for p in threads.pair_list} == {
        (("t1-b0", "t2-b0"), (1, 2), False, 17),
        (("t1-b1", "t2-b1"), (1, 2), False, 17),
    }
    assert [(i.image, i.pairs, i.changed) for i in threads.by_image] == [("local", 2, 2)]
    bench = found["cudnn_benchmark"]
    assert (bench.effect, bench.pairs, bench.changed, bench.first_step) == ("never", 2, 0, None)
    assert bench.sentence == "cudnn_benchmark: never (0 of 2 pairs)"
    assert all(p.equal and p.machines_differ is None for p in bench.pair_list)


def test_a_setting_that_changes_the_bits_on_one_image_only(tmp_path: Path):
    base = base_losses()
    late = {1: planted(12), 2: planted(30)}  # img-b with benchmark on: first at 12 (threads=1)
    cells = {}
    for image in ("img-a", "img-b"):
        for t in (1, 2):
            for b in (False, True):
                traj = late[t] if (image, b) == ("img-b", True) else base
                settings = {"image": image, "threads": t, "cudnn_benchmark": b}
                cells[f"{image}-t{t}-b{int(b)}"] = (settings, [traj, traj])
    write_cells(tmp_path, cells)
    found = effects(tmp_path)
    assert list(found) == ["image", "cudnn_benchmark", "threads"]
    bench = found["cudnn_benchmark"]
    assert (bench.effect, bench.pairs, bench.changed, bench.first_step) == ("one_image", 4, 2, 12)
    assert [(i.image, i.pairs, i.changed) for i in bench.by_image] == [
        ("img-a", 2, 0),
        ("img-b", 2, 2),
    ]
    assert bench.sentence == (
        "cudnn_benchmark: changes the bits only on img-b (2 of 2 pairs there; 0 of 2 "
        "elsewhere), first at step 12"
    )
    image = found["image"]
    assert (image.effect, image.pairs, image.changed, image.first_step) == ("sometimes", 4, 2, 12)
    assert image.by_image == [] and {p.image for p in image.pair_list} == {""}
    assert {p.values for p in image.pair_list} == {("img-a", "img-b")}
    # threads: only img-b's benchmark cells differ (at 12 and at 30): not all pairs there
    threads = found["threads"]
    assert (threads.effect, threads.pairs, threads.changed, threads.first_step) == (
        "sometimes",
        4,
        1,
        12,
    )
    assert [(i.image, i.pairs, i.changed) for i in threads.by_image] == [
        ("img-a", 2, 0),
        ("img-b", 2, 1),
    ]


def test_pairs_from_two_machines_are_reported_apart_and_not_counted(tmp_path: Path):
    a, b = on(machine()), on(machine(**AVX2))
    base, other = base_losses(), planted(5)
    write_cells(
        tmp_path,
        {
            "t1-b0": ({"threads": 1, "cudnn_benchmark": False}, [(base, a), (base, a)]),
            "t2-b0": ({"threads": 2, "cudnn_benchmark": False}, [(other, a), (other, a)]),
            "t1-b1": ({"threads": 1, "cudnn_benchmark": True}, [(base, a), (base, a)]),
            "t2-b1": ({"threads": 2, "cudnn_benchmark": True}, [(planted(3), b)] * 2),
        },
    )
    found = effects(tmp_path)
    assert MACHINE_ROW not in found  # no cell ran on two machines
    threads = found["threads"]
    # the pair across machines differs at step 3: not counted, so the first step stays 5
    assert (threads.effect, threads.pairs, threads.changed, threads.first_step) == (
        "always",
        1,
        1,
        5,
    )
    assert (threads.other_machine_pairs, threads.other_machine_changed) == (1, 1)
    assert threads.sentence == (
        "threads: changes the bits in 1 of 1 pair (first at step 5); 1 pair across machines "
        "not counted (bits differ in 1)"
    )
    apart = [p for p in threads.pair_list if p.machines_differ]
    assert [p.cells for p in apart] == [("t1-b1", "t2-b1")]
    assert apart[0].machines_differ.startswith("ran on different machines (CPU capability")
    bench = found["cudnn_benchmark"]
    assert (bench.effect, bench.pairs, bench.other_machine_pairs) == ("never", 1, 1)
    assert [i.pairs for i in bench.by_image] == [1]


def test_a_cell_on_two_machines_is_the_machines_row(tmp_path: Path):
    """Two repeats on each machine, each side agreeing, the second machine's first differing
    at step 40: judged. One run per machine that differ: unjudged (no side reproduces)."""
    a, b = on(machine()), on(machine(**AVX2))
    base, other = base_losses(), planted(40)
    write_cells(
        tmp_path,
        {
            "split": ({"threads": 1}, [(base, a), (base, a), (other, b), (other, b)]),
            "same": ({"threads": 2}, [(base, a)] * 4),
        },
        repeats=4,
    )
    found = effects(tmp_path)
    assert list(found) == ["threads", MACHINE_ROW]
    row = found[MACHINE_ROW]
    assert (row.effect, row.pairs, row.changed, row.first_step) == ("always", 1, 1, 40)
    (pair,) = row.pair_list
    assert pair.cells == ("split", "split")
    assert pair.values == (machine().fingerprint, machine(**AVX2).fingerprint)
    # threads: "split" diverges (its machines), so its pair with "same" is not judged
    assert (found["threads"].effect, found["threads"].unjudged_pairs) == ("no_pairs", 1)


def test_one_run_per_machine_leaves_the_machine_unjudged(tmp_path: Path):
    a, b = on(machine()), on(machine(**AVX2))
    write_cells(tmp_path, {"split": ({"threads": 1}, [(base_losses(), a), (planted(9), b)])})
    row = effects(tmp_path)[MACHINE_ROW]
    assert (row.effect, row.pairs, row.unjudged_pairs) == ("no_pairs", 0, 1)
    assert row.sentence == "machine: no pair to compare; 1 pair where a machine's runs disagree"


def test_pairs_with_a_cell_that_does_not_reproduce_are_unjudged(tmp_path: Path):
    base = base_losses()
    write_cells(
        tmp_path,
        {
            "t1": ({"threads": 1}, [base, base]),
            "t2": ({"threads": 2}, [base, planted(8)]),  # its own repeats differ
        },
    )
    threads = effects(tmp_path)["threads"]
    assert (threads.effect, threads.pairs, threads.unjudged_pairs) == ("no_pairs", 0, 1)
    assert threads.pair_list == []
    assert threads.sentence == (
        "threads: no pair to compare; 1 pair where a cell does not reproduce"
    )


def test_control_cells_are_left_out(tmp_path: Path):
    """A control that reproduces with other bits (threads=3) and one of its own placement:
    counted, they would make threads change the bits and placement vary."""
    base = base_losses()
    write_cells(
        tmp_path,
        {
            "t1": ({"threads": 1}, [base, base]),
            "t2": ({"threads": 2}, [base, base]),
            "ctl": ({"threads": 3}, [planted(2), planted(2)]),
            "ctl-none": ({"threads": 1, "placement": "none"}, [base, planted(4)]),
        },
    )
    found = effects(tmp_path, control=("ctl", "ctl-none"))
    assert list(found) == ["threads"]
    assert (found["threads"].effect, found["threads"].pairs) == ("never", 1)
    assert found["threads"].sentence == "threads: never (0 of 1 pair)"
    # the same records without the control marks: both would count
    unmarked = effects(tmp_path)
    assert list(unmarked) == ["placement", "threads"]
    assert (unmarked["threads"].effect, unmarked["threads"].changed) == ("sometimes", 2)


def test_no_two_cells_differ_in_one_setting_alone(tmp_path: Path):
    base = base_losses()
    write_cells(
        tmp_path,
        {
            "a": ({"threads": 1, "cudnn_benchmark": False}, [base, base]),
            "b": ({"threads": 2, "cudnn_benchmark": True}, [base, base]),
        },
    )
    found = effects(tmp_path)
    assert found["threads"].sentence == (
        "threads: no pair to compare (no two reproducing cells differ in it alone)"
    )
    assert found["cudnn_benchmark"].effect == "no_pairs"


def test_pairs_on_different_gpu_models_are_reported_apart(tmp_path: Path):
    h100, a100 = gpu("NVIDIA H100 80GB HBM3", 132), gpu("NVIDIA A100-SXM4-80GB", 108)
    write_cells(
        tmp_path,
        {
            "t1": ({"threads": 1}, [(base_losses(), h100)] * 2),
            "t2": ({"threads": 2}, [(planted(6), a100)] * 2),
        },
    )
    threads = effects(tmp_path)["threads"]
    assert (threads.effect, threads.pairs, threads.other_machine_pairs) == ("no_pairs", 0, 1)
    assert threads.pair_list[0].machines_differ.startswith("ran on different GPUs")
    assert threads.sentence == (
        "threads: no pair to compare; 1 pair across machines not counted (bits differ in 1)"
    )


def test_cpu_isa_pairs_differ_in_the_code_path_only_and_are_counted(tmp_path: Path):
    """``cpu_isa`` sets the capability and ISA limits itself: a pair on one CPU whose code
    paths differ is the setting's effect, not another machine's."""
    write_cells(
        tmp_path,
        {
            "native": ({"cpu_isa": "native"}, [(base_losses(), on(machine()))] * 2),
            "avx2": ({"cpu_isa": "avx2"}, [(planted(0), on(machine(**AVX2)))] * 2),
        },
    )
    found = effects(tmp_path)
    isa = found["cpu_isa"]
    assert (isa.effect, isa.pairs, isa.first_step, isa.other_machine_pairs) == ("always", 1, 0, 0)
    assert isa.sentence == "cpu_isa: changes the bits in 1 of 1 pair (first at step 0)"
    assert MACHINE_ROW not in found  # each cell ran on one machine


def test_what_is_trained_and_the_seed_get_no_row(tmp_path: Path):
    """Another network, learning rate, length or params, or another seed, has other bits by
    definition: no row asks it; the thread count beside them still gets one."""
    base, other = base_losses(), planted(4)
    cells = {
        "mlp": ({"threads": 1}, [base, base]),
        "mlp-t2": ({"threads": 2}, [other, other]),
        "cnn": ({"threads": 1, "model": "cnn"}, [other, other]),
        "lr": ({"threads": 1, "learning_rate": 0.01}, [other, other]),
        "seed": ({"threads": 1, "seed": 7}, [other, other]),
        "long": ({"threads": 1, "epochs": 2}, [other, other]),
        "p": ({"threads": 1, "params": {"ch": 4}}, [other, other]),
    }
    write_cells(tmp_path, cells)
    found = effects(tmp_path)
    assert list(found) == ["threads"]
    assert (found["threads"].pairs, found["threads"].changed) == (1, 1)


def test_a_pair_whose_losses_are_gone_changes_the_bits_at_an_unknown_step(tmp_path: Path):
    """Two reproducing cells with other trajectory digests, their runs made by hand (without
    the losses the report read) and the losses files gone: the bits differ, where is not
    known."""
    write_cells(
        tmp_path,
        {"t1": ({"threads": 1}, [base_losses()] * 2), "t2": ({"threads": 2}, [planted(7)] * 2)},
    )
    cells = analyze(tmp_path).cells
    for cell in cells:
        cell.runs = [dataclasses.replace(r, losses=None) for r in cell.runs]
    for path in tmp_path.glob("cells/t2--*/repeat-*/losses.npy"):
        path.unlink()
    (threads,) = what_changes_bits(cells)
    (pair,) = threads.pair_list
    assert (pair.setting, pair.cells, pair.equal, pair.first_step) == (
        "threads",
        ("t1", "t2"),
        False,
        None,
    )
    assert (threads.effect, threads.changed, threads.first_step) == ("always", 1, None)
    assert threads.sentence == "threads: changes the bits in 1 of 1 pair (first step unknown)"


def test_every_unjudged_pair_is_counted(tmp_path: Path):
    """One reproducing cell and two whose own repeats differ: three pairs, none judged."""
    base = base_losses()
    write_cells(
        tmp_path,
        {
            "t1": ({"threads": 1}, [base, base]),
            "t2": ({"threads": 2}, [base, planted(8)]),
            "t3": ({"threads": 3}, [base, planted(9)]),
        },
    )
    threads = effects(tmp_path)["threads"]
    assert (threads.effect, threads.pairs, threads.unjudged_pairs) == ("no_pairs", 0, 3)
    assert threads.sentence == (
        "threads: no pair to compare; 3 pairs where a cell does not reproduce"
    )


def test_a_setting_that_changes_the_bits_on_two_images_of_three(tmp_path: Path):
    """The images it changes the bits on are named, each count is its own: 1 pair on each of
    img-b and img-c, none of the 3 on img-a."""
    base = base_losses()
    cells = {
        f"img-a-t{t}-b{int(b)}": (
            {"image": "img-a", "threads": t, "cudnn_benchmark": b},
            [base] * 2,
        )
        for t in (1, 2, 3)
        for b in (False, True)
    }
    for image, step in (("img-b", 12), ("img-c", 20)):
        for b in (False, True):
            traj = planted(step) if b else base
            settings = {"image": image, "threads": 1, "cudnn_benchmark": b}
            cells[f"{image}-b{int(b)}"] = (settings, [traj] * 2)
    write_cells(tmp_path, cells)
    bench = effects(tmp_path)["cudnn_benchmark"]
    assert [(i.image, i.pairs, i.changed) for i in bench.by_image] == [
        ("img-a", 3, 0),
        ("img-b", 1, 1),
        ("img-c", 1, 1),
    ]
    assert bench.sentence == (
        "cudnn_benchmark: changes the bits only on img-b and img-c (2 of 2 pairs there; 0 of 3 "
        "elsewhere), first at step 12"
    )
