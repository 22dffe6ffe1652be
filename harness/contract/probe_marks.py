"""The marks that start the one result line of each probe the host runs in the workload's
interpreter or image: the probe prints the mark and a JSON value on one line, and the host finds
that line among whatever else the interpreter (torch, a warning) printed.

Both sides import these: the probes under ``harness/workload/`` print them, the executors read
them (``harness.executors.gpu_probe_host``, ``harness.executors.local_probes``).
"""

from __future__ import annotations

#: ``harness.workload.gpu_probe``: does torch compute on the GPUs a run gets
GPU_PROBE_MARK = "HARNESS_GPU_PROBE "
#: ``harness.workload.identity_probe``: what the local interpreter's runs would record
IDENTITY_MARK = "harness-identity: "
#: ``harness.workload.requirements_probe``: which of ``workload.requirements`` it has
REQUIREMENTS_MARK = "harness-requirements: "
