"""``harness diagnose`` of a user's module whose optimizer state appears after step 0: the head
is frozen until step ``unfreeze_at`` (tests/resources/own_workload/variants.py, Adam), so Adam's
state of the head's parameters exists only from then on (real runs, real replays).

Two repeats of one cell replay without error and do not diverge; the replay lists the head's
state from the step it appears (null before). Two cells that unfreeze at steps 1 and 2 part at
step 1, in the head: the state that differs is the head's, its Adam state included.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_diagnose import diagnosis, harness
from test_own_workload import CODE

pytestmark = pytest.mark.slow

MATRIX = f"""\
name: unfreeze
run: {{repeats: 2, epochs: 1, max_steps_per_epoch: 5}}
workload:
  entry: variants:unfreezes
  path: {CODE}
axes:
  placement: [before_model]
  params: [{{unfreeze_at: 1}}, {{unfreeze_at: 2}}]
"""
HEAD_STATE = {
    f"head.{p}:{k}" for p in ("weight", "bias") for k in ("exp_avg", "exp_avg_sq", "step")
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, str]]:
    tmp = tmp_path_factory.mktemp("unfreeze")
    (tmp / "matrix.yaml").write_text(MATRIX)
    out = tmp / "results"
    proc = harness(
        "run", str(tmp / "matrix.yaml"), "--out", str(out), "--progress", "quiet", "--no-report"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    cells = {c["settings"]["params"]["unfreeze_at"]: c["id"] for c in manifest["cells"]}
    return out, cells


def _replay(out: Path, found: dict, side: str) -> dict:
    folder = next(p for p in (out / "diagnoses").iterdir() if p.name.startswith(found["name"]))
    return json.loads((folder / side / "replay.json").read_text())


def test_repeats_of_a_model_unfrozen_at_step_1_replay_and_do_not_diverge(results):
    out, cells = results
    proc = harness("diagnose", str(out), "--cell", cells[1], "--no-report")
    found = diagnosis(out, proc)
    assert found["finding"]["kind"] == "no_divergence", proc.stdout
    assert "did not diverge in 5 replayed steps" in proc.stdout
    replay = _replay(out, found, "a")
    names = replay["state_names"]
    assert HEAD_STATE <= set(names)
    head = [names.index(n) for n in sorted(HEAD_STATE)]
    assert all(replay["states"][0][i] is None for i in head)  # frozen in step 0: no state
    assert all(row[i] is not None for row in replay["states"][1:] for i in head)


def test_cells_unfrozen_at_steps_1_and_2_part_at_step_1_in_the_head(results):
    out, cells = results
    proc = harness("diagnose", str(out), "--cells", cells[1], "--cells", cells[2], "--no-report")
    finding = diagnosis(out, proc)["finding"]
    assert finding["state_step"] == 1, proc.stdout
    assert set(finding["state_differs"]) == HEAD_STATE | {"head.weight", "head.bias"}
    assert finding["op"]["step"] == 1 and finding["op"]["module"] == "head"
