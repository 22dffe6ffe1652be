"""The one file format between the host side and the workload side.

Both sides import this package, so it uses the standard library alone: the host never imports
torch, and the container image carries no pydantic. docs/run-record.md documents every field.

Words (used the same way everywhere):
  setting     one knob of a cell, declared once in ``settings.SETTINGS``
  cell        one point of the matrix: a full set of settings
  repeat      one run of a cell (``repeat`` is its 0-based index)
  trajectory  the per-step training losses of one run, float32, shape [steps, ranks]
  run record  ``run.json`` + ``losses.npy`` + TensorBoard event files, written by one run
"""

from harness.contract.files import (
    LOG_FILE,
    LOSSES_FILE,
    RECORD_FILE,
    SPEC_FILE,
    TENSORBOARD_DIR,
    WEIGHTS_FILE,
    write_bytes_atomic,
    write_json_atomic,
)
from harness.contract.record import (
    RECORD_FORMAT_VERSION,
    ErrorType,
    RunRecord,
    write_record,
)
from harness.contract.settings import DEFAULT_SEED, SETTINGS, Setting
from harness.contract.spec import (
    CUBLAS_WORKSPACE_DETERMINISTIC,
    IMAGE_ENV,
    NUMERIC_ENV_VARS,
    SPEC_FORMAT_VERSION,
    USER_CODE_ENV,
    RunSpec,
    SpecError,
    cublas_workspace_in_force,
    environment_for,
    run_environment,
)

__all__ = [
    "CUBLAS_WORKSPACE_DETERMINISTIC",
    "DEFAULT_SEED",
    "IMAGE_ENV",
    "LOG_FILE",
    "LOSSES_FILE",
    "NUMERIC_ENV_VARS",
    "RECORD_FILE",
    "RECORD_FORMAT_VERSION",
    "SETTINGS",
    "SPEC_FILE",
    "SPEC_FORMAT_VERSION",
    "TENSORBOARD_DIR",
    "USER_CODE_ENV",
    "WEIGHTS_FILE",
    "ErrorType",
    "RunRecord",
    "RunSpec",
    "Setting",
    "SpecError",
    "cublas_workspace_in_force",
    "environment_for",
    "run_environment",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_record",
]
