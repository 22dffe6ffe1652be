"""Sharding: the split is balanced, whole-cell, deterministic, and plan and run agree on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.errors import HarnessError, StoreError
from harness.executors.fake import FakeExecutor
from harness.matrix import Cell, CellSettings, cell_id, load_matrix, parse_matrix
from harness.run.matrix_runner import RunConfig, run_matrix
from harness.run.shard import (
    COST_FACTOR,
    MAX_SHARDS,
    ShardSpec,
    assign,
    cell_cost,
    cells_of_shard,
    parse_shard,
    plan_shards,
)

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"


def cell(name: str, **settings) -> Cell:
    full = CellSettings(**settings).model_dump(mode="json")
    return Cell(cell_id(full), name, full)


def test_cost_is_epochs_times_steps_times_repeats_times_the_accelerator_factor():
    cpu = cell("a", epochs=2, max_steps_per_epoch=100)
    gpu = cell("b", epochs=2, max_steps_per_epoch=100, accelerator="gpu")
    assert cell_cost(cpu, 3) == 2 * 100 * 3 * COST_FACTOR["cpu"]
    assert cell_cost(gpu, 3) == 2 * 100 * 3 * COST_FACTOR["gpu"]
    # null steps: the whole epoch, 1,719 steps at batch 32 and half as many at batch 64
    assert cell_cost(cell("c"), 1) == 1719 * COST_FACTOR["cpu"]
    assert cell_cost(cell("d", batch_size=64), 1) == 860 * COST_FACTOR["cpu"]


def test_longest_first_gives_a_balanced_split():
    cells = [cell(f"c{s}", max_steps_per_epoch=s) for s in (100, 200, 300, 400, 500, 600)]
    shards = assign(cells, 1, 2)
    loads = sorted(s.cost for s in shards)
    assert sum(loads) == sum(cell_cost(c, 1) for c in cells)
    assert loads == [1000 * COST_FACTOR["cpu"], 1100 * COST_FACTOR["cpu"]]


def test_equal_costs_go_where_the_gpu_need_does_not_grow():
    # After three cells both shards cost 60; the 2-GPU cell joins the shard that has 2 GPUs.
    c1 = cell("c1", max_steps_per_epoch=20)  # cpu: 60
    g1 = cell("g1", max_steps_per_epoch=45, accelerator="gpu", devices=2)  # 45
    c2 = cell("c2", max_steps_per_epoch=5)  # cpu: 15
    g2 = cell("g2", max_steps_per_epoch=6, accelerator="gpu", devices=2)  # 6
    shards = assign([c1, g1, c2, g2], 1, 2)
    by_name = {s.index: [c.name for c in s.cells] for s in shards}
    assert by_name == {1: ["c1"], 2: ["g1", "c2", "g2"]}
    assert [s.gpus for s in shards] == [0, 2]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(1, 2000), min_size=1, max_size=40, unique=True),
    gpus=st.lists(st.integers(0, 4), min_size=40, max_size=40),
    total=st.integers(1, 12),
)
def test_every_cell_once_in_matrix_order_and_within_the_list_scheduling_bound(steps, gpus, total):
    cells = [
        cell(f"c{i}", max_steps_per_epoch=s, accelerator="gpu" if g else "cpu", devices=max(g, 1))
        for i, (s, g) in enumerate(zip(steps, gpus, strict=False))
    ]
    shards = assign(cells, 2, total)
    assert len(shards) == total
    placed = [c.id for s in shards for c in s.cells]
    assert sorted(placed) == sorted(c.id for c in cells)
    order = [c.id for c in cells]
    for s in shards:
        ids = [c.id for c in s.cells]
        assert ids == sorted(ids, key=order.index)  # matrix order within a shard
        need = max(
            (c.settings["devices"] for c in s.cells if c.settings["accelerator"] == "gpu"),
            default=0,
        )
        assert s.gpus == need
    costs = [cell_cost(c, 2) for c in cells]
    assert max(s.cost for s in shards) <= sum(costs) / total + max(costs)
    # deterministic: the same split whatever order the cells come in
    again = assign(list(reversed(cells)), 2, total)
    assert [{c.id for c in s.cells} for s in again] == [{c.id for c in s.cells} for s in shards]


def test_parse_shard_and_limits():
    assert parse_shard("2/4") == ShardSpec(2, 4)
    assert str(parse_shard(" 1 / 1 ")) == "1/1"
    for bad in ("0/4", "5/4", "2", "a/b", "1/0", f"1/{MAX_SHARDS + 1}"):
        with pytest.raises(HarnessError):
            parse_shard(bad)


def test_plan_github_prints_one_line_for_fromjson(capsys):
    assert main(["plan", str(QUICK), "--shards", "2", "--format", "github"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    include = json.loads(out)["include"]
    assert [e["shard"] for e in include] == ["1/2", "2/2"]
    assert [e["index"] for e in include] == [1, 2] and {e["total"] for e in include} == {2}
    assert sum(e["cells"] for e in include) == 3 and {e["gpus"] for e in include} == {0}
    # never more jobs than cells, and never an empty job
    assert main(["plan", str(QUICK), "--shards", "10", "--format", "github"]) == 0
    include = json.loads(capsys.readouterr().out)["include"]
    assert [e["shard"] for e in include] == ["1/3", "2/3", "3/3"]
    assert all(e["cells"] == 1 for e in include)


def test_plan_refuses_more_than_256_jobs(capsys):
    assert main(["plan", str(QUICK), "--shards", "257", "--format", "github"]) == 2
    err = capsys.readouterr().err
    assert "256" in err and "hint:" in err


def test_run_shard_runs_its_cells_only_and_records_the_shard(tmp_path: Path):
    matrix = load_matrix(QUICK)
    planned = plan_shards(matrix, 2)
    seen = []
    for shard in planned:
        spec = ShardSpec(shard.index, shard.total)
        assert [c.id for c in cells_of_shard(matrix, spec)] == [c.id for c in shard.cells]
        out = tmp_path / f"s{shard.index}"
        config = RunConfig(matrix=matrix, out=out, progress="quiet", shard=spec)
        assert run_matrix(config, FakeExecutor(seconds=0.01)).exit_code == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["shard"] == {"index": shard.index, "total": 2}
        ids = [c["id"] for c in manifest["cells"]]
        assert ids == [c.id for c in shard.cells]
        assert len(list(out.glob("cells/*/repeat-*/run.json"))) == 2 * len(ids)
        report = json.loads((out / "report.json").read_text())
        assert [c["id"] for c in report["cells"]] == ids
        seen += ids
    assert sorted(seen) == sorted(c.id for c in matrix.cells)
    # A folder holds one shard: another shard into it is refused, not mixed in.
    other = RunConfig(matrix=matrix, out=tmp_path / "s1", progress="quiet", shard=ShardSpec(2, 2))
    with pytest.raises(StoreError, match="shard"):
        run_matrix(other, FakeExecutor())


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2", "cannot read shard '2'\n  hint: write it as I/N, e.g. --shard 2/4"),
        ("a/b", "cannot read shard 'a/b'\n  hint: write it as I/N, e.g. --shard 2/4"),
        ("0/4", "shard '0/4': the index must be between 1 and 4\n  hint: e.g. --shard 1/4"),
        ("5/4", "shard '5/4': the index must be between 1 and 4\n  hint: e.g. --shard 1/4"),
        ("1/0", "--shards 0: need at least one shard\n  hint: e.g. --shards 4"),
        (
            "1/257",
            "--shards 257 is more than GitHub Actions' 256 jobs per matrix\n"
            "  hint: use at most 256 shards; each shard runs several cells",
        ),
    ],
)
def test_what_a_bad_shard_is_told(text: str, says: str):
    assert parse_shard(f"{MAX_SHARDS}/{MAX_SHARDS}") == ShardSpec(256, 256)  # the most allowed
    with pytest.raises(HarnessError) as info:
        parse_shard(text)
    assert str(info.value) == says


def test_a_one_cell_matrix_is_one_shard_job():
    one = parse_matrix("name: one\naxes: {placement: [none]}\n", Path("one.yaml"))
    shards = plan_shards(one, 4)
    assert [(s.index, s.total, [c.id for c in s.cells]) for s in shards] == [
        (1, 1, [one.cells[0].id])
    ]


def test_among_equal_costs_the_cells_needing_more_gpus_are_placed_first():
    """Ranked by cost, then GPUs, both descending: the two 2-GPU cells go first, one to each
    shard, and the CPU cell joins shard 1."""
    a = cell("a", max_steps_per_epoch=30, accelerator="gpu", devices=2)
    b = cell("b", max_steps_per_epoch=10)  # cpu: 30, the same cost
    c = cell("c", max_steps_per_epoch=30, accelerator="gpu", devices=2, seed=1)
    shards = assign([a, b, c], 1, 2)
    first = min((a, c), key=lambda x: x.id)
    second = max((a, c), key=lambda x: x.id)
    by_index = {s.index: ({x.name for x in s.cells}, s.gpus) for s in shards}
    assert by_index == {1: ({first.name, "b"}, 2), 2: ({second.name}, 2)}
