"""What the report says across cells (harness/report/summaries.py and analyze.py), pinned as
whole outputs on hand-made cells: the per-image sentences, the comparisons across images and GPU
counts, the cost of determinism, the failed runs, the merge conflicts and the images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_report import base_losses, make_cell, make_results, write_run

from harness.contract import write_json_atomic
from harness.contract.record import RunError
from harness.errors import HarnessError
from harness.report import analyze
from harness.report.markdown import render_markdown
from harness.report.markdown_blocks import escape
from harness.report.report_data import (
    CellReport,
    CheckError,
    Comparison,
    ConflictCopy,
    Cost,
    Divergence,
    Failure,
    ImageInfo,
    RunResult,
)
from harness.report.summaries import (
    compare_across,
    conflicts,
    costs,
    describe_image,
    failures,
    fmt_setting,
    images,
)

EPOCHS = [(0, 0), (1, 60)]


def cell(
    name: str,
    verdict: str = "reproduces",
    *,
    distinct: int = 1,
    final_equal: bool | None = True,
    runs: list[RunResult] | None = None,
    copies: list[RunResult] | None = None,
    spe: float | None = None,
    **settings,
) -> CellReport:
    return CellReport(
        id=name,
        name=name,
        settings={"image": "repo/a:1", **settings},
        repeats=2,
        ok_runs=2,
        distinct_trajectories=distinct,
        verdict=verdict,
        reproducible={"reproduces": True, "diverges": False}.get(verdict),
        unknown_because=None,
        first_divergence=None,
        divergences=[],
        init_equal=True,
        final_equal=final_equal,
        val_acc_mean=None,
        val_acc_sd=None,
        seconds_per_epoch=spe,
        detail="",
        runs=runs or [],
        conflict_copies=copies or [],
    )


def ok_run(root: Path, repeat: int, losses: np.ndarray | None, name: str, **fields) -> RunResult:
    run_dir = root / name / f"repeat-{repeat}"
    if losses is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        np.save(run_dir / "losses.npy", losses)
    fields.setdefault("trajectory", None if losses is None else losses.tobytes().hex())
    status = fields.pop("status", "ok")
    return RunResult(repeat=repeat, status=status, run_dir=run_dir, epoch_starts=EPOCHS, **fields)


def test_settings_are_written_as_in_the_matrix():
    assert [fmt_setting("placement", "none"), fmt_setting("seed", 7)] == [
        "placement=none",
        "seed=7",
    ]
    assert [fmt_setting("allow_tf32", True), fmt_setting("threads", None)] == [
        "allow_tf32=true",
        "threads=null",
    ]


def test_the_image_summary_names_the_cells_the_axis_and_the_rest():
    cells = [
        cell("a", placement="before_model", seed=1),
        cell("b", placement="before_model", seed=2),
        cell("c", "diverges", distinct=2, placement="none", seed=1),
        cell("d", "diverges", final_equal=False, placement="none", seed=2),
        cell("e", "unknown", placement="process_start", seed=1),
    ]
    assert describe_image("repo/a:1", cells) == (
        "On repo/a:1, 2 of 4 cells reproduce bit for bit "
        "(placement=before_model, seed=1; placement=before_model, seed=2); the other 2 do not. "
        "placement breaks it: placement=none never reproduces, while placement=before_model "
        "always does. "
        "1 cell(s) have identical losses but different final weights. "
        "1 cell(s) have no verdict (see Cells without a verdict): not counted above."
    )


def test_an_axis_with_several_values_that_never_reproduce():
    cells = [
        cell("a", "diverges", distinct=2, placement="none"),
        cell("b", placement="before_model"),
        cell("c", "diverges", distinct=2, placement="before_trainer"),
        cell("d", placement="process_start"),
        cell("e", "diverges", distinct=3, placement="before_trainer"),
    ]
    assert describe_image("img", cells) == (
        "On img, 2 of 5 cells reproduce bit for bit (placement=before_model; "
        "placement=process_start); the other 3 do not. "
        "placement breaks it: placement=none and placement=before_trainer never reproduce, "
        "while placement=before_model and placement=process_start always does."
    )


@pytest.mark.parametrize(
    ("verdicts", "sentence"),
    [
        (["unknown", "unknown"], "On img, no cell has a verdict. 2 cell(s) have no verdict"),
        (["reproduces", "reproduces"], "On img, all 2 cells reproduce bit for bit."),
        (["diverges", "diverges", "unknown"], "On img, none of the 2 cells reproduces bit for"),
        (
            ["reproduces", "diverges"],
            "On img, 1 of 2 cells reproduce bit for bit (placement=none); the other 1 do not.",
        ),
    ],
)
def test_the_headline(verdicts: list[str], sentence: str):
    """Cells with the same settings (placement names them when no setting varies); an axis that
    only ever breaks, or never does, gets no sentence."""
    cells = [cell(f"c{i}", v, distinct=2, placement="none") for i, v in enumerate(verdicts)]
    assert describe_image("img", cells).startswith(sentence)
    assert "breaks it" not in describe_image("img", cells)


def test_comparisons_across_images_use_each_cells_first_ok_run(tmp_path: Path):
    """Three images with the same settings: b's first ok run (repeat 1) leaves a's at step 61,
    c equals a; the comparison names b's differing run. A singleton group is no comparison;
    a group with a cell without an ok run has no answer."""
    base, changed = base_losses(), base_losses()
    changed[61, 0] += np.float32(0.5)
    a = cell("a", runs=[ok_run(tmp_path, 0, base, "a")], placement="none")
    b_runs = [ok_run(tmp_path, 0, None, "b", status="failed"), ok_run(tmp_path, 1, changed, "b")]
    b = cell("b", runs=b_runs, placement="none")
    c = cell("c", runs=[ok_run(tmp_path, 0, base, "c")], placement="none")
    for x, image in zip((a, b, c), ("repo/a:1", "repo/b:1", "repo/c:1"), strict=True):
        x.settings["image"] = image
    alone = cell("alone", runs=[ok_run(tmp_path, 0, base, "alone")], placement="before_model")
    (comparison,) = compare_across("image", [alone, a, b, c])
    delta = float(abs(np.float64(changed[61, 0]) - np.float64(base[61, 0])))
    ulps = int(abs(int(changed[61:62].view("<i4")[0, 0]) - int(base[61:62].view("<i4")[0, 0])))
    assert comparison == Comparison(
        axis="image",
        settings={"placement": "none"},
        cells=[("repo/a:1", "a"), ("repo/b:1", "b"), ("repo/c:1", "c")],
        equal=False,
        divergence=Divergence(
            repeat=1,
            step=61,
            epoch=1,
            batch=1,
            max_abs_delta=delta,
            max_ulps=ulps,
            shape_differs=False,
            copy=None,
        ),
    )
    (equal,) = compare_across("image", [a, c])
    assert (equal.equal, equal.divergence) == (True, None)
    b.runs = b_runs[:1]
    (unanswered,) = compare_across("image", [a, b])
    assert (unanswered.equal, unanswered.divergence) == (None, None)


def test_a_comparison_whose_losses_are_gone_still_says_they_differ(tmp_path: Path):
    """Two GPU counts whose losses.npy are gone when compared: the digests still differ. The
    cells' settings were written in another order (a merged or found-on-disk folder): they are
    the same settings all the same."""
    a = cell("a", runs=[ok_run(tmp_path, 0, None, "a", trajectory="t")], seed=3, devices=1)
    b = cell("b", runs=[ok_run(tmp_path, 0, None, "b", trajectory="u")])
    b.settings = {"devices": 2, "seed": 3, "image": "repo/a:1"}
    (comparison,) = compare_across("devices", [a, b])
    assert comparison == Comparison(
        axis="devices",
        settings={"image": "repo/a:1", "seed": 3},
        cells=[("1", "a"), ("2", "b")],
        equal=False,
        divergence=None,
    )


def test_the_cost_of_determinism_pairs_each_cell_with_its_twin():
    """A cell against the cell with the nondeterministic settings (TWIN) and otherwise its own:
    a half-deterministic cell has the same twin; the twin itself and a cell without a twin that
    ran are left out."""
    det = cell("det", spe=3.0, placement="none", cudnn_deterministic=True, cudnn_benchmark=False)
    det.settings["deterministic_algorithms"] = "on"
    twin = cell("twin", spe=1.5, placement="none", cudnn_deterministic=False, cudnn_benchmark=True)
    twin.settings["deterministic_algorithms"] = "off"
    half = cell("half", spe=2.0, placement="none", cudnn_deterministic=False, cudnn_benchmark=True)
    half.settings["deterministic_algorithms"] = "warn"
    lonely = cell("lonely", spe=9.0, placement="before_model", cudnn_deterministic=True)
    assert costs([det, twin, half, lonely]) == [
        Cost(cell="det", twin="twin", seconds_per_epoch=3.0, twin_seconds_per_epoch=1.5),
        Cost(cell="half", twin="twin", seconds_per_epoch=2.0, twin_seconds_per_epoch=1.5),
    ]


def test_failures_list_every_run_that_is_not_ok_with_what_it_said():
    def r(repeat: int, status: str, **fields) -> RunResult:
        where = f"cells/f/repeat-{repeat}"
        return RunResult(repeat=repeat, status=status, run_dir=Path("x"), path=where, **fields)

    error = RunError(type="timeout", message="timed out", log_tail="tail")
    runs = [
        r(0, "ok", recorded="ok"),
        r(1, "failed", recorded="failed", error=error, problem="failed (timeout)"),
        r(2, "missing", problem="no run record"),
        r(
            3,
            "failed",
            recorded="failed",
            error=CheckError(type="", message=""),
            problem="failed (x)",
        ),
        r(4, "corrupt", recorded=None),
    ]
    copies = [
        r(0, "corrupt", recorded="ok", problem="corrupt losses.npy: missing", copy="2-b"),
        r(1, "failed", recorded="failed", error=error, copy="3-c"),  # redone: not a failure
        r(2, "ok", recorded="ok", copy="4-d"),
        r(3, "failed", recorded="ok", problem="zero steps", copy="5-e"),
    ]
    for c in copies:
        c.path = f"conflicts/{c.copy}/f/repeat-{c.repeat}"
    assert failures([cell("f", runs=runs, copies=copies)]) == [
        Failure(
            cell="f",
            repeat=1,
            type="timeout",
            message="timed out",
            log_tail="tail",
            path="cells/f/repeat-1",
        ),
        Failure(
            cell="f",
            repeat=2,
            type="missing",
            message="no run record",
            log_tail="",
            path="cells/f/repeat-2",
        ),
        Failure(
            cell="f",
            repeat=3,
            type="failed",
            message="failed (x)",
            log_tail="",
            path="cells/f/repeat-3",
        ),
        Failure(
            cell="f", repeat=4, type="corrupt", message="", log_tail="", path="cells/f/repeat-4"
        ),
        Failure(
            cell="f",
            repeat=0,
            type="corrupt",
            message="corrupt losses.npy: missing",
            log_tail="",
            path="conflicts/2-b/f/repeat-0",
        ),
        Failure(
            cell="f",
            repeat=3,
            type="failed",
            message="zero steps",
            log_tail="",
            path="conflicts/5-e/f/repeat-3",
        ),
    ]


def test_conflicts_say_whether_each_copy_has_the_kept_runs_result():
    def r(repeat: int, status: str, where: str, traj: str = "t", final: str = "w", **kw):
        return RunResult(
            repeat=repeat,
            status=status,
            run_dir=Path("x"),
            path=where,
            trajectory=traj,
            final_weights=final,
            **kw,
        )

    runs = [r(0, "ok", "cells/k/repeat-0"), r(1, "failed", "cells/k/repeat-1")]
    copies = [
        r(0, "ok", "conflicts/2-b/k/repeat-0"),
        r(0, "ok", "conflicts/3-c/k/repeat-0", final="v"),
        r(0, "ok", "conflicts/4-d/k/repeat-0", traj="u"),
        r(1, "ok", "conflicts/2-b/k/repeat-1"),
        r(5, "corrupt", "conflicts/2-b/k/repeat-5", problem="corrupt losses.npy: missing"),
    ]
    assert conflicts([cell("k", runs=runs, copies=copies)]) == [
        ConflictCopy(
            cell="k",
            repeat=0,
            path="conflicts/2-b/k/repeat-0",
            kept="cells/k/repeat-0",
            status="ok",
            kept_status="ok",
            same_result=True,
        ),
        ConflictCopy(
            cell="k",
            repeat=0,
            path="conflicts/3-c/k/repeat-0",
            kept="cells/k/repeat-0",
            status="ok",
            kept_status="ok",
            same_result=False,
        ),
        ConflictCopy(
            cell="k",
            repeat=0,
            path="conflicts/4-d/k/repeat-0",
            kept="cells/k/repeat-0",
            status="ok",
            kept_status="ok",
            same_result=False,
        ),
        ConflictCopy(
            cell="k",
            repeat=1,
            path="conflicts/2-b/k/repeat-1",
            kept="cells/k/repeat-1",
            status="ok",
            kept_status="failed",
            same_result=None,
        ),
        ConflictCopy(
            cell="k",
            repeat=5,
            path="conflicts/2-b/k/repeat-5",
            kept="",
            status="corrupt",
            kept_status="missing",
            same_result=None,
            problem="corrupt losses.npy: missing",
        ),
    ]


def test_images_list_what_their_ok_runs_recorded_once_each():
    def r(status: str, digest: str | None, image_id: str | None, torch: str | None):
        return RunResult(
            repeat=0,
            status=status,
            run_dir=Path("x"),
            image_digest=digest,
            image_id=image_id,
            torch=torch,
        )

    a = cell("a", runs=[r("ok", "d1", "id1", "2.4"), r("ok", "d1", "id1", "2.4")])
    b = cell("b", runs=[r("failed", "d9", "id9", "9"), r("ok", None, None, None)])
    b.runs.append(r("ok", "d2", "id2", "2.4"))
    c = cell("c", runs=[r("failed", "d8", "id8", "8")])
    assert images({"repo/a:1": [a, b], "repo/b:1": [c]}) == [
        ImageInfo(
            image="repo/a:1", digests=["d1", "d2"], image_ids=["id1", "id2"], torch=["2.4"], cells=2
        ),
        ImageInfo(image="repo/b:1", digests=[], image_ids=[], torch=[], cells=1),
    ]


@pytest.mark.parametrize("make", [None, "file"])
def test_analyze_needs_a_results_folder(tmp_path: Path, make: str | None):
    root = tmp_path / "results"
    if make:
        root.write_text("not a folder")
    with pytest.raises(HarnessError) as caught:
        analyze(root)
    assert caught.value.message == f"{root}: no such results folder"
    assert caught.value.hint == "give the folder that `harness run` wrote"


def test_the_report_of_a_folder_puts_the_summaries_together(tmp_path: Path):
    """Two images and two GPU counts: one summary per image, the comparison across images
    before the one across GPU counts, the failed run, each image with its cells."""
    a = make_cell("a", image="repo/a:1", devices=1)
    b = make_cell("b", image="repo/b:1", devices=1)
    a2 = make_cell("a2", image="repo/a:1", devices=2)
    make_results(tmp_path, [a, a2, b], repeats=2)
    error = {"type": "failed", "message": "boom", "log_tail": "tail"}
    for k in range(2):
        write_run(tmp_path, a, k, base_losses())
        write_run(tmp_path, a2, k, base_losses())
    write_run(tmp_path, b, 0, base_losses())
    write_run(tmp_path, b, 1, None, status="failed", error=error)
    report = analyze(tmp_path)
    assert (report.name, report.root, report.mixed_code, report.conflicts) == (
        "hand-made",
        tmp_path,
        [],
        [],
    )
    assert [c.name for c in report.cells] == ["a", "a2", "b"]
    assert report.summaries == {
        "repo/a:1": "On repo/a:1, all 2 cells reproduce bit for bit.",
        "repo/b:1": "On repo/b:1, no cell has a verdict. 1 cell(s) have no verdict (see Cells "
        "without a verdict): not counted above.",
    }
    assert [(c.axis, c.cells, c.equal) for c in report.comparisons] == [
        ("image", [("repo/a:1", "a"), ("repo/b:1", "b")], True),
        ("devices", [("1", "a"), ("2", "a2")], True),
    ]
    assert report.costs == []
    assert report.failures == [
        Failure(
            cell="b",
            repeat=1,
            type="failed",
            message="boom",
            log_tail="tail",
            path=f"{b['dir']}/repeat-1",
        )
    ]
    assert [(i.image, i.cells) for i in report.images] == [("repo/a:1", 2), ("repo/b:1", 1)]


def test_the_report_says_what_differs_between_merged_inputs(tmp_path: Path):
    """A folder merged with --allow-mixed: the manifest's merge.mixed, one line each."""
    a = make_cell("a")
    make_results(tmp_path, [a], repeats=2)
    for k in range(2):
        write_run(tmp_path, a, k, base_losses())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    mixed = [{"what": "harness_version", "values": {"shard-a": ["0.1"], "shard-b": ["0.2"]}}]
    manifest["merge"] = {"mixed": mixed}
    write_json_atomic(tmp_path / "manifest.json", manifest)
    assert analyze(tmp_path).mixed_code == [
        "harness version (manifest.json harness_version) differs: shard-a: 0.1; shard-b: 0.2"
    ]


def _gpu(name: str, sm_count: int | None) -> dict:
    """A GPU of a record's provenance (``sm_count`` None: a record written before it was)."""
    gpu = {"index": 0, "name": name, "capability": "9.0", "memory_bytes": 1, "uuid": "u"}
    return gpu if sm_count is None else {**gpu, "sm_count": sm_count, "pci_bus_id": None}


H100 = ("NVIDIA H100 80GB HBM3", 132)


@pytest.mark.parametrize(
    ("b_gpu", "note"),
    [
        (H100, None),
        (("NVIDIA H100 80GB HBM3", None), None),  # an older record: no SM count to compare
        (
            ("NVIDIA A100-SXM4-80GB", 108),
            "ran on different GPUs: NVIDIA H100 80GB HBM3 (132 SMs), NVIDIA A100-SXM4-80GB "
            "(108 SMs)",
        ),
        (
            ("NVIDIA H100 PCIe", 132),  # another model with as many SMs: still said
            "ran on different GPUs: NVIDIA H100 80GB HBM3 (132 SMs), NVIDIA H100 PCIe (132 SMs)",
        ),
        (
            ("NVIDIA L4", None),  # another model, from a record without SM counts
            "ran on different GPUs: NVIDIA H100 80GB HBM3 (132 SMs), NVIDIA L4 (SM count not "
            "recorded)",
        ),
        (
            ("", 132),  # a device without a name
            "ran on different GPUs: NVIDIA H100 80GB HBM3 (132 SMs), unnamed GPU (132 SMs)",
        ),
        (
            ("NVIDIA H100 80GB HBM3", 114),  # the PCIe H100: same model name family, fewer SMs
            "ran on different GPUs: NVIDIA H100 80GB HBM3 (132 SMs), NVIDIA H100 80GB HBM3 "
            "(114 SMs)",
        ),
    ],
)
def test_a_comparison_says_when_its_runs_ran_on_different_gpus(
    tmp_path: Path, b_gpu: tuple, note: str | None
):
    """Two images, the same settings, on GPUs read from the runs' provenance: the report says
    where their model or SM count differ (cuBLAS's bits are only promised on the same
    architecture and SM count), and says nothing where they are the same."""
    a = make_cell("a", image="repo/a:1", accelerator="gpu")
    b = make_cell("b", image="repo/b:1", accelerator="gpu")
    make_results(tmp_path, [a, b], repeats=1)
    write_run(tmp_path, a, 0, base_losses(), provenance={"gpus": [_gpu(*H100)]})
    write_run(tmp_path, b, 0, base_losses(1), provenance={"gpus": [_gpu(*b_gpu)]})
    report = analyze(tmp_path)
    (comparison,) = report.comparisons
    assert (comparison.axis, comparison.equal, comparison.gpus_differ) == ("image", False, note)
    text = render_markdown(report).decode()
    section = text.split("## Across images and GPU counts", 1)[1].split("\n## ", 1)[0]
    if note is None:
        assert "different GPUs" not in section and "cuBLAS" not in section
    else:
        assert (
            f"- image (a, b): {escape(note)}; cuBLAS promises equal bits only on the same "
            "architecture and SM count." in section
        )


def test_the_report_words_print_and_serialize_as_their_values():
    """Statuses, verdicts and sources are enums that write the words the report always wrote."""
    import csv
    import io
    import json

    from harness.report.report_data import DIVERGES, OK, OWN_RUNS, ResultStatus, Verdict

    for word, text in ((OK, "ok"), (DIVERGES, "diverges"), (OWN_RUNS, "own_runs")):
        assert (str(word), f"{word}", f"{word:>9}", " ".join([word])) == (
            text,
            text,
            f"{text:>9}",
            text,
        )
        assert json.dumps({word: [word]}) == json.dumps({text: [text]})
        assert {text: 1}[word] == 1 and word == text
        out = io.StringIO()
        csv.writer(out).writerow([word])
        assert out.getvalue() == f"{text}\r\n"
    assert RunResult(repeat=0, status="corrupt", run_dir=Path("x")).status is ResultStatus.CORRUPT
    assert cell("c", verdict="unknown").verdict is Verdict.UNKNOWN
