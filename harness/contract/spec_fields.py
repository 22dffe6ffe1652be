"""``RunSpec``: one field per setting of the table, then the run fields.

Generated from harness/contract/settings.py by ``python -m harness.matrix.docs``; do not edit.
The checks and methods are harness/contract/spec_base.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.contract.settings import SETTINGS
from harness.contract.spec_base import SpecBase, check_spec


@dataclass(frozen=True)
class RunSpec(SpecBase):
    """Everything one repeat of one cell is: written by the host as spec.json."""

    #: local (this machine's Python) or a CUDA PyTorch image
    image: str = "local"
    #: where it trains
    accelerator: str = "cpu"
    #: processes (GPUs) per run; 2 or more means DDP
    devices: int = 1
    #: where the seed is set: nowhere, after the model and before the Trainer, before the model, or
    #: first thing in the process
    placement: str = "before_model"
    #: the network: mlp, the post's (no cuDNN call), or cnn, the PyTorch MNIST example (its
    #: convolutions go through cuDNN; dropout draws from the seeded generator)
    model: str = "mlp"
    #: torch.backends.cudnn.deterministic
    cudnn_deterministic: bool = True
    #: torch.backends.cudnn.benchmark
    cudnn_benchmark: bool = False
    #: torch.use_deterministic_algorithms: off, on, or on with warn_only (quote them: YAML reads
    #: bare off/on as booleans)
    deterministic_algorithms: str = "off"
    #: CUBLAS_WORKSPACE_CONFIG of the run: auto sets :4096:8 when deterministic_algorithms is on or
    #: warn and leaves it unset when off; unset leaves it unset; or the value itself
    cublas_workspace: str = "auto"
    #: torch intra-op threads per process (the loss bits depend on it)
    threads: int = 1
    #: TF32 in cuBLAS matmuls and cuDNN convolutions
    allow_tf32: bool = False
    #: the CPU code path: native (what this CPU and the environment give) or a ceiling that oneDNN,
    #: MKL and ATen may not exceed (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA,
    #: MKL_ENABLE_INSTRUCTIONS, MKL_CBWR, set before torch is imported); an older CPU's code path
    #: on this one, not a copy of another machine (docs/results.md, "Machines")
    cpu_isa: str = "native"
    #: the seed, at the placement
    seed: int = 201014
    #: training epochs
    epochs: int = 1
    #: optimizer steps per epoch (null: the whole epoch)
    max_steps_per_epoch: int | None = None
    #: PYTHONHASHSEED of the run's processes
    pythonhashseed: int = 0
    #: training batch size (the post's 32)
    batch_size: int = 32
    #: Adam's learning rate (the post's 1e-4)
    learning_rate: float = 0.0001
    #: the mlp's hidden width (the post's 64; cnn has none)
    hidden_size: int = 64
    #: the training to run: null, the built-in MNIST experiment, or package.module:function, your
    #: build function (docs/workload.md); workload.entry sets it for every cell
    entry: str | None = None
    #: a mapping your build function receives (e.g. {lr: 0.001}); workload.params gives every
    #: cell's, an axis or include entry overrides some of them; each is a report column
    params: dict[str, Any] = field(default_factory=dict)
    repeat: int = 0
    cell_id: str = ""
    cell_name: str = ""
    format_version: int = 2
    #: how the run runs, not what it computes; None (unset) is left out of to_dict()
    ddp_timeout_s: float | None = None
    test_fault: dict[str, Any] | None = None
    #: count the host syncs of the training steps (docs/workload.md, "Host syncs per step")
    count_host_syncs: bool | None = None
    #: a replay for harness diagnose (harness/workload/replay.py); None in every run of a matrix
    diagnose: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_spec(self, SETTINGS)
