"""The two sides stay apart: the workload never loads host packages, the host never loads torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST_ONLY = ("pydantic", "yaml", "docker", "rich", "typer")
#: What the workload's own dependencies load by themselves: pytorch-lightning depends on PyYAML
#: and imports rich when it happens to be installed (it is not, in the workload image).
#: The modules outside harness.workload that the workload shares with the host (stdlib only).
SHARED = {
    "harness",
    "harness.contract",
    "harness.contract.code",
    "harness.contract.files",
    "harness.contract.machine",
    "harness.contract.probe_marks",
    "harness.contract.record",
    "harness.contract.settings",
    "harness.contract.spec",
    "harness.contract.trajectory_hash",
    "harness.contract.spec_base",
    "harness.contract.spec_fields",
    "harness.contract.run_errors",
    "harness.mnist",
}
DEPENDENCIES = "import torch, torchvision, torchmetrics, pytorch_lightning, torch.utils.tensorboard"


def _modules_after(*steps: str) -> list[set[str]]:
    """The modules loaded after each of ``steps``, run one after the other in one interpreter."""
    snapshot = "import json, sys\nprint('modules: ' + json.dumps(sorted(sys.modules)))"
    probe = "\n".join(f"{code}\n{snapshot}" for code in steps)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    lines = [x for x in result.stdout.splitlines() if x.startswith("modules: ")]
    assert len(lines) == len(steps), result.stdout
    return [set(json.loads(x.removeprefix("modules: "))) for x in lines]


def test_workload_imports_no_host_packages():
    # one interpreter (torch's import is seconds): what the dependencies load by themselves,
    # then what the workload's modules add to that
    baseline, loaded = _modules_after(
        DEPENDENCIES,
        "import harness.workload.__main__, harness.workload.training, harness.workload.networks, "
        "harness.lightning",  # ReproRecorder: the workload side, in a user's own script
    )
    assert "torch" in baseline and "pytorch_lightning" in baseline, "the probe must load them"
    added = loaded - baseline
    assert "harness.workload.training" in added
    leaked = sorted(m for m in added if m.split(".")[0] in HOST_ONLY)
    assert leaked == []
    harness_modules = {m for m in added if m.startswith("harness")}
    workload_side = {"harness.lightning"}
    assert all(
        m in SHARED | workload_side or m.startswith("harness.workload") for m in harness_modules
    ), harness_modules


def test_host_side_contract_and_record_do_not_import_torch():
    (loaded,) = _modules_after("import harness, harness.contract, harness.results.run_reader")
    assert "pydantic" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in {"torch", "pytorch_lightning"})
    assert heavy == []


def test_entry_point_module_is_stdlib_only_until_it_runs():
    (loaded,) = _modules_after("import harness.workload.__main__")
    assert "harness.workload.__main__" in loaded
    assert "torch" not in loaded and "numpy" not in loaded


def test_workload_sources_import_no_host_package():
    import ast

    sources = sorted((REPO / "harness" / "workload").rglob("*.py"))
    assert len(sources) >= 5
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in HOST_ONLY, f"{path}: imports {name}"
                if name.startswith("harness.") and not name.startswith("harness.workload"):
                    assert name in SHARED, f"{path}: imports {name}"


def test_shared_modules_are_stdlib_only():
    (loaded,) = _modules_after("import harness.contract, harness.mnist")
    assert "harness.mnist" in loaded
    third_party = {"torch", "numpy", "pydantic", "yaml", "docker", "rich", "typer"}
    assert sorted(m for m in loaded if m.split(".")[0] in third_party) == []


def test_the_contract_package_is_standard_library_only():
    import ast

    sources = sorted((REPO / "harness" / "contract").glob("*.py"))
    assert {p.name for p in sources} >= {"settings.py", "spec.py", "record.py", "files.py"}
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ok = top in sys.stdlib_module_names or top == "__future__"
                assert ok or name.startswith("harness.contract"), f"{path}: imports {name}"
