"""``run.count_host_syncs``: the run field, the record field, and the counting itself.

The count on a GPU is checked by scripts/gpu-check.sh (its ``host_syncs`` section); the CPU
run's null-with-reason by tests/test_gpu_check_script.py, in a real run. Here: what needs no
training.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from harness.contract import RunSpec
from harness.contract.record import HostSyncs, RunRecord, write_record
from harness.contract.spec import SpecError
from harness.matrix import load_matrix
from harness.results.run_reader import load_record
from harness.workload.syncs import SYNC_MESSAGE, count_every_sync_warning, count_sync_warnings


def _warn_n_times_from_one_line(n: int) -> None:
    for _ in range(n):
        warnings.warn(SYNC_MESSAGE, UserWarning, stacklevel=1)  # one code location


def test_every_sync_is_counted_not_once_per_code_location():
    """The run captures warnings with the ``default`` action, which reports a warning once per
    code location: a sync made by every step would count once. The ``always`` filter for
    torch's message makes each one count."""
    with warnings.catch_warnings(record=True) as once:
        warnings.simplefilter("default")
        _warn_n_times_from_one_line(5)
    assert count_sync_warnings(once) == 1  # the registry's dedup: why the filter exists
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        count_every_sync_warning()
        _warn_n_times_from_one_line(5)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert count_sync_warnings(caught) == 5
    assert len(caught) == 6  # other warnings are still captured, and not counted


def test_the_run_field_is_left_out_of_specs_until_set():
    assert "count_host_syncs" not in RunSpec().to_dict()
    spec = RunSpec(count_host_syncs=True)
    assert spec.to_dict()["count_host_syncs"] is True
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(SpecError, match="count_host_syncs"):
        RunSpec(count_host_syncs="yes")


def _matrix(tmp_path: Path, run: str):
    path = tmp_path / "m.yaml"
    path.write_text(f"name: t\nrun: {{{run}}}\naxes: {{placement: [none, before_model]}}\n")
    return load_matrix(path)


def test_count_host_syncs_reaches_every_spec_and_changes_no_cell_id_or_digest(tmp_path):
    plain = _matrix(tmp_path, "repeats: 1")
    counted = _matrix(tmp_path, "repeats: 1, count_host_syncs: true")
    off = _matrix(tmp_path, "repeats: 1, count_host_syncs: false")
    assert all("count_host_syncs" not in c.spec(0).to_dict() for c in plain.cells + off.cells)
    assert all(c.spec(0).count_host_syncs is True for c in counted.cells)
    assert plain.digest == counted.digest == off.digest  # what is recorded, not computed
    assert [c.id for c in counted.cells] == [c.id for c in plain.cells]


def test_the_record_carries_host_syncs_and_reads_back(tmp_path):
    synced = HostSyncs(count=7, steps=300, scope="training")
    write_record(tmp_path, RunRecord(status="ok", spec={}, host_syncs=synced))
    assert load_record(tmp_path).host_syncs == synced
    assert RunRecord(status="ok", spec={}).to_dict()["host_syncs"] is None  # not asked
