"""``harness baseline``'s golden-digests file (harness/gates/baseline.py): what it holds of a
results
folder, and what a file that cannot be one is told; and a results folder read as a result set."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.contract.trajectory_hash import trajectory_sha256
from harness.errors import HarnessError
from harness.executors.base import RunOutcome, RunStatus
from harness.executors.fake import FakeExecutor
from harness.exit_codes import EXIT_BAD_INPUT, EXIT_NOT_COMPARABLE
from harness.gates.baseline import (
    CellDigests,
    ResultSet,
    from_file,
    from_results,
    load_result_set,
    to_json,
    write_baseline,
)
from harness.gates.compare import compare
from harness.matrix import load_matrix
from harness.run.matrix_runner import RunConfig, run_matrix

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "examples" / "placement-quick.yaml"


class Mixed(FakeExecutor):
    """Placement ``none`` fails: its first repeat with ``cudnn_benchmark`` off, every repeat
    with it on; every finished run records an image digest and a torch version of its own
    repeat, so that "the first finished repeat" shows."""

    def run(self, spec, slot, run_dir, **kwargs):
        if spec.placement == "none" and (spec.repeat == 0 or spec.cudnn_benchmark):
            return RunOutcome(RunStatus.FAILED, 0.0, 1, "exit code 1")
        outcome = super().run(spec, slot, run_dir, **kwargs)
        path = run_dir / "run.json"
        record = json.loads(path.read_text())
        record["provenance"]["image_digest"] = f"sha256:repeat{spec.repeat}"
        record["provenance"]["torch"] = f"2.{spec.repeat}"
        if spec.placement == "before_model" and spec.cudnn_benchmark and spec.repeat == 1:
            # recorded "ok", but its losses turn NaN: the report counts it as failed
            losses = np.load(run_dir / "losses.npy")
            losses[5:] = np.nan
            np.save(run_dir / "losses.npy", losses)
            record["digests"]["trajectory"] = trajectory_sha256(losses)
        path.write_text(json.dumps(record))
        return outcome


VERDICTS = {  # (placement, cudnn_benchmark): the verdict the Mixed executor gives the cell
    ("none", 0): None,
    ("none", 1): None,
    ("before_trainer", 0): False,
    ("before_trainer", 1): False,
    ("before_model", 0): True,
    ("before_model", 1): None,  # its second repeat's losses are NaN
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """The quick example with cudnn_benchmark on and off: ``none`` lost its first repeat (off)
    or all of them (on), ``before_trainer`` diverges, ``before_model`` reproduces."""
    root = tmp_path_factory.mktemp("golden")
    matrix = root / "matrix.yaml"
    text = QUICK.read_text()
    matrix.write_text(text.replace("cudnn_benchmark: [false]", "cudnn_benchmark: [false, true]"))
    assert matrix.read_text() != text
    out = root / "results"
    config = RunConfig(matrix=load_matrix(matrix), out=out, progress="quiet")
    run_matrix(config, Mixed(seconds=0.0, diverge_placement="before_trainer"))
    return out


def records(results: Path, name: str) -> list[dict | None]:
    """Each repeat's run.json of the cell ``name``, None where the run failed."""
    (cell,) = (results / "cells").glob(f"{name}-*")
    out = []
    for repeat in sorted(cell.glob("repeat-*")):
        record = json.loads((repeat / "run.json").read_text())
        finite = (
            np.isfinite(np.load(repeat / "losses.npy")).all() if record["status"] == "ok" else False
        )
        out.append(record if finite else None)
    return out


def test_the_golden_file_holds_each_cells_verdict_and_first_finished_digests(results, tmp_path):
    golden = tmp_path / "deep" / "er" / "golden.json"
    assert main(["baseline", str(results), "-o", str(golden)]) == 0
    data = json.loads(golden.read_text())
    created_at = data.pop("created_at")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", created_at)
    created = dt.datetime.fromisoformat(created_at)
    assert abs(dt.datetime.now(dt.timezone.utc) - created) < dt.timedelta(minutes=5)
    manifest = json.loads((results / "manifest.json").read_text())
    expected_cells = {}
    not_settings = {"cell_id", "cell_name", "format_version", "repeat"}
    for (placement, bench), verdict in VERDICTS.items():
        name = f"local-cpu1-{placement}-det1-bench{bench}-algoff"
        runs = records(results, name)
        first = next((r for r in runs if r), None)
        spec = json.loads(
            next((results / "cells").glob(f"{name}-*/repeat-0/spec.json")).read_text()
        )
        expected_cells[spec["cell_id"]] = {
            "name": name,
            "settings": {k: v for k, v in spec.items() if k not in not_settings},
            "reproducible": verdict,
            "trajectories": [r["digests"]["trajectory"] if r else None for r in runs],
            "final_weights": first["digests"]["final_weights"] if first else None,
            "image": "local",
            "image_digest": first["provenance"]["image_digest"] if first else None,
            "torch": first["provenance"]["torch"] if first else None,
            # the fake executor's records name no machine
            "machines": [None] * len(runs),
        }
    assert data == {
        "format_version": 2,
        "kind": "harness-baseline",
        "matrix": "placement-quick",
        "matrix_digest": manifest["matrix_digest"],
        "source": str(results),
        "machines": {},
        "cells": expected_cells,
    }
    assert list(data["cells"]) == sorted(expected_cells)
    # the repeats that differ each keep their own bits; the first finished one pins the rest
    by_name = {e["name"]: e for e in data["cells"].values()}
    assert by_name["local-cpu1-none-det1-bench0-algoff"]["image_digest"] == "sha256:repeat1"
    assert by_name["local-cpu1-none-det1-bench1-algoff"]["trajectories"] == [None, None]
    diverged = by_name["local-cpu1-before_trainer-det1-bench0-algoff"]
    assert diverged["image_digest"] == "sha256:repeat0" and len(set(diverged["trajectories"])) == 2


def test_the_cli_tells_how_many_cells_the_golden_file_holds(results, tmp_path, capsys):
    golden = tmp_path / "golden.json"
    assert main(["baseline", str(results), "-o", str(golden)]) == 0
    assert capsys.readouterr().out == f"{golden}: 6 cells (1 reproduce)\n"


def test_a_golden_file_reads_back_as_the_folder_it_was_made_of(results, tmp_path, capsys):
    golden = tmp_path / "golden.json"
    written = write_baseline(results, golden)
    back = load_result_set(golden)
    assert back.cells == written.cells == from_results(results).cells
    assert (back.source, back.matrix, back.matrix_digest) == (
        str(golden),
        "placement-quick",
        written.matrix_digest,
    )
    assert len(written.matrix_digest) == 64
    rc = main(["compare", str(golden), str(results)])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("**No regression.**") and "6 cells in both" in out


def test_a_folder_without_a_manifest_records_no_matrix_digest(results, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(results, bare)
    (bare / "manifest.json").unlink()
    assert from_results(bare).matrix_digest is None
    rc = main(["compare", str(results), str(bare)])
    captured = capsys.readouterr()
    assert rc == EXIT_NOT_COMPARABLE
    assert "not recorded \\(bare\\) in the current results" in captured.out


def test_a_baseline_of_a_folder_without_cells_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "cells").mkdir(parents=True)
    assert main(["baseline", str(empty), "-o", str(tmp_path / "g.json")]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (
        f"error: {empty} has no cells\n  hint: give a folder with finished runs\n"
    )
    assert not (tmp_path / "g.json").exists()


def golden_text(ensure_ascii: bool = True, **changes) -> str:
    data = {
        "format_version": 1,
        "kind": "harness-baseline",
        "matrix": "m",
        "matrix_digest": "d" * 64,
        "cells": {},
    }
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not ...}, ensure_ascii=ensure_ascii)


REGENERATE = "regenerate it with `harness baseline`"


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        (
            "{",
            ": not a readable golden-digests file (Expecting property name enclosed in double "
            "quotes: line 1 column 2 (char 1))",
            "make one with `harness baseline RESULTS_DIR -o FILE`",
        ),
        (
            "[]",
            ' is not a golden-digests file (no "kind": "harness-baseline")',
            "make one with `harness baseline RESULTS_DIR -o FILE`, or give a results folder",
        ),
        (
            golden_text(kind="harness-report"),
            ' is not a golden-digests file (no "kind": "harness-baseline")',
            "make one with `harness baseline RESULTS_DIR -o FILE`, or give a results folder",
        ),
        (
            golden_text(format_version=3),
            ": golden-digests format 3 is not one of 1, 2",
            "regenerate it with this harness: `harness baseline RESULTS_DIR -o FILE`",
        ),
        (
            golden_text(format_version=...),
            ": golden-digests format None is not one of 1, 2",
            "regenerate it with this harness: `harness baseline RESULTS_DIR -o FILE`",
        ),
        (golden_text(matrix_digest=5), ": matrix_digest is 5, not a digest", REGENERATE),
        (golden_text(cells=...), ": malformed golden-digests file ('cells')", REGENERATE),
        (
            golden_text(machines=[]),
            ": malformed golden-digests file (machines is list, not a mapping)",
            REGENERATE,
        ),
        (
            golden_text(machines={"0123456789ab": {"cpu_flags": 5}}),
            ": malformed golden-digests file (machines['0123456789ab'].cpu_flags: Input should "
            "be a valid list)",
            REGENERATE,
        ),
        (
            golden_text(cells=[]),
            ": malformed golden-digests file ('list' object has no attribute 'items')",
            REGENERATE,
        ),
        (
            golden_text(cells={"a": {"name": "a"}}),
            ": malformed golden-digests file (CellDigests.__init__() missing 6 required "
            "positional arguments: 'settings', 'reproducible', 'trajectories', "
            "'final_weights', 'image', and 'image_digest')",
            REGENERATE,
        ),
    ],
)
def test_a_file_that_is_no_golden_digests_file_is_told_what_is_wrong(text, message, hint, tmp_path):
    path = tmp_path / "golden.json"
    path.write_text(text)
    with pytest.raises(HarnessError) as caught:
        load_result_set(path)
    assert (caught.value.message, caught.value.hint) == (f"{path}{message}", hint)


def test_a_golden_file_that_is_not_text_is_a_user_error(tmp_path, capsys):
    path = tmp_path / "golden.json"
    path.write_bytes(b"\xff\xfe{")
    assert main(["compare", str(path), str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: not a readable golden-digests file (")
    assert "Traceback" not in err
    with pytest.raises(HarnessError, match="not a readable golden-digests file"):
        from_file(tmp_path)  # a folder: the OSError is told the same way


def test_a_golden_file_without_a_matrix_name_reads_as_unnamed(tmp_path):
    path = tmp_path / "golden.json"
    path.write_text(golden_text(matrix=..., matrix_digest=None))
    back = load_result_set(path)
    assert (back.matrix, back.matrix_digest, back.cells) == ("", None, {})


def test_a_path_that_is_neither_is_told_what_to_give(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["compare", str(missing), str(missing)]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (
        f"error: {missing}: no such results folder or golden-digests file\n"
        "  hint: give a folder `harness run`/`harness merge` wrote, or a file from "
        "`harness baseline`\n"
    )


def test_a_golden_file_lists_its_cells_by_id_whatever_order_they_came_in():
    cell = CellDigests("c", {}, True, ["t"], "w", "local", None, "2.5.1")
    data = to_json(ResultSet("r", "m", None, {"b": cell, "c": cell, "a": cell}))
    assert list(data["cells"]) == ["a", "b", "c"]


def test_a_golden_cell_written_before_torch_was_kept_reads_as_torch_unknown(tmp_path):
    entry = {
        "name": "c",
        "settings": {"image": "local"},
        "reproducible": True,
        "trajectories": ["t", "t"],
        "final_weights": "w",
        "image": "local",
        "image_digest": None,
    }
    path = tmp_path / "old.json"
    path.write_text(golden_text(cells={"a": entry}))
    old = load_result_set(path)
    assert old.cells["a"].torch is None
    assert old.cells["a"].image_identity == "local (torch unknown)"
    now = ResultSet("r", "m", "d" * 64, {"a": CellDigests(**entry, torch="2.5.1")})
    changes = compare(old, now).changes
    assert [(c.what, c.baseline, c.current, c.regression) for c in changes] == [
        ("image changed", "local (torch unknown)", "local (torch 2.5.1)", False)
    ]


def test_a_golden_file_is_read_as_utf8_whatever_the_hosts_locale(tmp_path, monkeypatch):
    """A golden file kept in a repository is UTF-8; a host whose locale encoding is another
    (cp1252 on Windows) still reads its names as written."""
    entry = {
        "name": "zürich-ö",
        "settings": {"image": "local"},
        "reproducible": True,
        "trajectories": ["t"],
        "final_weights": "w",
        "image": "local",
        "image_digest": None,
        "torch": "2.5.1",
    }
    path = tmp_path / "golden.json"
    path.write_bytes(golden_text(cells={"a": entry}, ensure_ascii=False).encode("utf-8"))
    monkeypatch.setattr(io, "text_encoding", lambda encoding, stacklevel=2: encoding or "cp1252")
    assert load_result_set(path).cells["a"].name == "zürich-ö"
