"""Each determinism setting reaches torch, and the run record says what torch had.

``provenance.determinism`` is read from torch when ``fit`` returns, never copied from the spec,
so a workload that forgot to apply a flag (or a Trainer that overrode one) records the wrong
value and these tests fail. Two layers:

- ``apply_determinism`` in this process, once per value of each setting (fast; every value,
  including ``on`` against ``warn``);
- two real repeats in fresh processes (a few seconds each): every setting at its default, and
  every setting at a value that is not torch's own default, so that skipping any one flag shows
  in one of the two records.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from harness.contract import CUBLAS_WORKSPACE_DETERMINISTIC, RunSpec
from harness.contract.record import Determinism
from harness.results.run_reader import load_record
from harness.workload.provenance import determinism_in_force
from harness.workload.seeding import apply_determinism

#: spec settings -> the flags torch must then have (Determinism's fields, minus the env var)
CASES: list[tuple[dict, dict]] = [
    ({"cudnn_deterministic": True}, {"cudnn_deterministic": True}),
    ({"cudnn_deterministic": False}, {"cudnn_deterministic": False}),
    ({"cudnn_benchmark": True}, {"cudnn_benchmark": True}),
    ({"cudnn_benchmark": False}, {"cudnn_benchmark": False}),
    (
        {"deterministic_algorithms": "off"},
        {"deterministic_algorithms": False, "deterministic_algorithms_warn_only": False},
    ),
    (
        {"deterministic_algorithms": "on"},
        {"deterministic_algorithms": True, "deterministic_algorithms_warn_only": False},
    ),
    (
        {"deterministic_algorithms": "warn"},
        {"deterministic_algorithms": True, "deterministic_algorithms_warn_only": True},
    ),
    ({"allow_tf32": True}, {"matmul_allow_tf32": True, "cudnn_allow_tf32": True}),
    ({"allow_tf32": False}, {"matmul_allow_tf32": False, "cudnn_allow_tf32": False}),
]

#: The opposite of each expected value, so a skipped assignment cannot pass by luck.
OPPOSITE = {
    "cudnn_deterministic": ({"cudnn_deterministic": False}, {"cudnn_deterministic": True}),
    "cudnn_benchmark": ({"cudnn_benchmark": False}, {"cudnn_benchmark": True}),
    "deterministic_algorithms": (
        {"deterministic_algorithms": "off"},
        {"deterministic_algorithms": "warn"},
    ),
    "allow_tf32": ({"allow_tf32": False}, {"allow_tf32": True}),
}


@pytest.fixture
def torch_flags() -> Iterator[None]:
    """Put this process's flags back as they were: other tests share the interpreter."""
    saved = determinism_in_force()
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic = saved.cudnn_deterministic
        torch.backends.cudnn.benchmark = saved.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = saved.matmul_allow_tf32
        torch.backends.cudnn.allow_tf32 = saved.cudnn_allow_tf32
        torch.use_deterministic_algorithms(
            saved.deterministic_algorithms, warn_only=saved.deterministic_algorithms_warn_only
        )


@pytest.mark.parametrize(
    ("settings", "expected"),
    CASES,
    ids=[",".join(f"{k}={v}" for k, v in settings.items()) for settings, _ in CASES],
)
def test_apply_determinism_sets_each_flag(torch_flags, settings: dict, expected: dict):
    name = next(iter(settings))
    # Start from the opposite state, so the assertion holds only if the flag was assigned.
    for start in OPPOSITE[name]:
        if start[name] != settings[name]:
            apply_determinism(RunSpec(**start))
    apply_determinism(RunSpec(**settings))
    flags = determinism_in_force()
    assert {key: getattr(flags, key) for key in expected} == expected


# ------------------------------------------------------------------ real repeats

#: Every determinism setting away from its default, each to a value torch does not start with.
FLIPPED = {
    "cudnn_deterministic": False,  # the spec's default (True) is not torch's; see DEFAULTS
    "cudnn_benchmark": True,
    "deterministic_algorithms": "warn",
    "allow_tf32": True,
}
#: What torch must hold after fit, per run (the spec's defaults: det True, bench False, alg off,
#: tf32 False; torch itself starts with cudnn.deterministic False and cudnn.allow_tf32 True).
EXPECTED = {
    "defaults": Determinism(
        cudnn_deterministic=True,
        cudnn_benchmark=False,
        deterministic_algorithms=False,
        deterministic_algorithms_warn_only=False,
        matmul_allow_tf32=False,
        cudnn_allow_tf32=False,
        # auto with deterministic algorithms off: unset, even where this shell exported it
        cublas_workspace_config=None,
    ),
    "flipped": Determinism(
        cudnn_deterministic=False,
        cudnn_benchmark=True,
        deterministic_algorithms=True,
        deterministic_algorithms_warn_only=True,
        matmul_allow_tf32=True,
        cudnn_allow_tf32=True,
        cublas_workspace_config=CUBLAS_WORKSPACE_DETERMINISTIC,
    ),
}
SETTINGS_OF = {"defaults": {}, "flipped": FLIPPED}


@pytest.fixture(scope="module")
def flag_runs(workload, tmp_path_factory, mnist_dir) -> dict[str, Determinism | None]:
    """The recorded ``provenance.determinism`` of a default and a flipped real repeat."""
    root = tmp_path_factory.mktemp("flags")

    def one(name: str) -> Determinism | None:
        out: Path = root / name
        spec = {"max_steps_per_epoch": 3, **SETTINGS_OF[name]}
        result = workload(spec, out, data_dir=mnist_dir)
        assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
        return load_record(out).provenance.determinism

    # two one-thread processes side by side (each is mostly its seconds of importing torch)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(SETTINGS_OF, pool.map(one, SETTINGS_OF), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("run", ["defaults", "flipped"])
@pytest.mark.parametrize(
    "flag", [f for f in Determinism.__dataclass_fields__ if f != "cublas_workspace_config"]
)
def test_each_flag_is_in_force_during_a_real_run(flag_runs, run: str, flag: str):
    recorded = flag_runs[run]
    assert recorded is not None, "a finished run records the flags it ran with"
    assert getattr(recorded, flag) == getattr(EXPECTED[run], flag), (
        f"{run} run: torch had {flag}={getattr(recorded, flag)} during fit"
    )


@pytest.mark.slow
@pytest.mark.parametrize("run", ["defaults", "flipped"])
def test_cublas_workspace_config_is_recorded(flag_runs, run: str):
    assert flag_runs[run].cublas_workspace_config == EXPECTED[run].cublas_workspace_config
