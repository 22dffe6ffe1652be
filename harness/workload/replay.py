"""A replay for ``harness diagnose``: the run again, watched closely, for a few steps.

The run trains exactly as the recorded one did (same spec, same seeding, same order), stops after
``steps`` optimizer steps, and records what the host needs to say where two runs part ways:

- the bitwise hash of every parameter as the model was created, and after every step of every
  tensor of the training state (listed afresh after each step: an optimizer's state can appear
  later, as a layer is unfrozen);
- the hashes of every batch's inputs and labels, so a different split or order shows;
- for the steps ``log_from`` to ``log_step`` (one or two), every operation: with
  ``level: ops`` each aten operation that ran (``torch.utils._debug_mode.DebugMode``), with
  its phase (forward, backward, optimizer, collective), the module it ran in, its inputs' and
  outputs' hashes and shapes, and a copy of its outputs; with ``level: modules`` (older
  torch, which has no DebugMode) each module's output and gradients, each parameter's
  gradient and update, from module and tensor hooks.

Everything is written once, after training, as ``replay.json`` and ``replay-outputs.npz``
(harness/contract/files.py) by the rank the host asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from harness.contract.files import REPLAY_FILE, REPLAY_OUTPUTS_FILE, write_json_atomic
from harness.workload.replay_tensors import (
    describe,
    hash_text,
    hex64,
    host_copy,
    pointers_of,
    state_hashes,
    state_rows,
    tensors_of,
    training_state,
)
from harness.workload.weights import HASH_KIND, tensor_hashes

#: 2: the training state is listed afresh after every step; ``state_names`` holds every name
#: seen, and a step's row holds null for a tensor that did not exist then (an optimizer's state
#: appears at the first step that updates its parameter: a layer unfrozen later)
REPLAY_FORMAT_VERSION = 2
#: Operations whose outputs are uninitialised memory: never compared.
_UNINITIALISED = ("empty", "set_", "resize_")
#: The profiler's markers, which DebugMode also sees: not operations on data.
_MARKERS = ("profiler.",)


def has_debug_mode() -> bool:
    try:
        from torch.utils._debug_mode import DebugMode  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ReplayOptions:
    """The spec's ``diagnose`` entry (harness/contract/spec.py checks it)."""

    steps: int
    log_step: int | None = None
    level: str = "ops"
    log_from: int | None = None
    rank: int = 0

    @classmethod
    def of(cls, entry: dict[str, Any]) -> ReplayOptions:
        return cls(**entry)


class ReplayProbe(Callback):
    """The initial, per-step and logged steps' per-operation hashes; see the module's doc."""

    def __init__(self, options: ReplayOptions, model: LightningModule) -> None:
        self.options = options
        self.level = options.level if has_debug_mode() else "modules"
        self.names = [name for name, _ in model.named_parameters()]
        self.init = tensor_hashes([p for _, p in model.named_parameters()])
        self.batches: list[torch.Tensor] = []
        #: every training-state tensor's name seen so far, in the order each first appeared
        self.state_names: list[str] = []
        self._column: dict[str, int] = {}
        #: per step: the columns (indexes into ``state_names``) of the tensors it had, their hashes
        self.states: list[tuple[list[int], torch.Tensor]] = []
        self.step = 0
        self.phase = "forward"
        self.ops: list[dict[str, Any]] = []
        self.logged: dict[str, list[dict[str, Any]]] = {}
        self.outputs: dict[str, np.ndarray] = {}
        self._stack: contextlib.ExitStack | None = None
        self._module: LightningModule | None = None
        self._tracker: Any = None
        self._mode: Any = None
        self._trainer: Trainer | None = None

    # ------------------------------------------------------------------ Lightning hooks

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batches.append(tensor_hashes(tensors_of(batch)))
        self.phase = "forward"
        if self._logs(self.step):
            self._start(pl_module, trainer)

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Any) -> None:
        self.phase = "backward"

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.phase = "between backward and optimizer"

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Any
    ) -> None:
        self.phase = "optimizer"

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self._stack is not None:
            if self.level == "modules":
                self._parameter_updates(pl_module)
            self._stop()
        state = training_state(pl_module, trainer.optimizers)
        self.states.append(([self._column_of(name) for name, _ in state], state_hashes(state)))
        self.step += 1

    def _column_of(self, name: str) -> int:
        if name not in self._column:
            self._column[name] = len(self.state_names)
            self.state_names.append(name)
        return self._column[name]

    # ------------------------------------------------------------------ operation logging

    def _logs(self, step: int) -> bool:
        last = self.options.log_step
        if last is None:
            return False
        first = self.options.log_from if self.options.log_from is not None else last
        return first <= step <= last

    def _start(self, pl_module: LightningModule, trainer: Trainer) -> None:
        self._module = pl_module
        self._trainer = trainer
        self.ops = []
        self._stack = contextlib.ExitStack()
        if self.level == "ops":
            self._start_ops()
        else:
            self._start_modules(pl_module)

    def _stop(self) -> None:
        assert self._stack is not None
        self._stack.close()
        self._stack = None
        if self.level == "ops":
            self._collect_ops()
        self._name_tensors()
        self.logged[str(self.step)] = self.ops

    def _start_ops(self) -> None:
        from torch.distributed._tools.mod_tracker import ModTracker
        from torch.utils._debug_mode import DebugMode

        stack = self._stack
        assert stack is not None  # _start's
        self._tracker = ModTracker()
        self._mode = DebugMode(record_output=False)
        stack.enter_context(self._tracker)
        stack.enter_context(self._mode)
        stack.enter_context(
            DebugMode.dispatch_hooks(record_hook=self._after_op, pre_log_hook=self._before_op)
        )

    def _before_op(self, func: Any, types: Any, args: Any, kwargs: Any, call: Any) -> dict:
        """Input hashes before the operation runs (an in-place op changes them)."""
        inputs = tensors_of((args, kwargs))
        return {"inputs": describe(inputs, [hash_text(t) for t in inputs])}

    def _after_op(self, func: Any, types: Any, args: Any, kwargs: Any, result: Any) -> dict:
        name = str(func)
        if name.startswith(_MARKERS):
            return {}
        outputs = tensors_of(result)
        compared = not any(part in name for part in _UNINITIALISED)
        hashes = [hash_text(t) if compared else None for t in outputs]
        index = len(self.ops)
        entry = {
            "index": index,
            "op": name,
            "phase": "collective" if name.startswith("c10d") else self.phase,
            "module": self._current_module(),
            "outputs": describe(outputs, hashes),
            "_pointers": pointers_of(outputs),
        }
        self.ops.append(entry)
        if compared:
            for k, tensor in enumerate(outputs):
                copy = host_copy(tensor)
                if copy is not None:
                    self.outputs[f"s{self.step}_op{index}_{k}"] = copy
        return {"entry": index}

    def _collect_ops(self) -> None:
        """Join each logged call's input hashes (pre-hook) to its entry (record hook)."""
        for call in self._mode.operators:
            record = getattr(call, "record", None) or {}
            log = getattr(call, "log", None) or {}
            if "entry" in record:
                self.ops[record["entry"]]["inputs"] = log.get("inputs", [])

    def _current_module(self) -> str | None:
        """The innermost module running now, as a path below the LightningModule ("" for the
        LightningModule itself; None outside every module, as in the optimizer)."""
        names = [n for n in self._tracker.parents if n != "Global"]
        if not names:
            return None
        deepest = max(names, key=lambda n: n.count("."))
        return deepest.partition(".")[2]

    def _name_tensors(self) -> None:
        """Name each logged output that is (a view of) a parameter, a parameter's gradient or
        an optimizer's state tensor at the step's end, by its storage and shape: the weight
        gradient ``aten.mm`` of a Linear layer becomes ``model.3.weight (gradient)``."""
        assert self._module is not None and self._trainer is not None
        known: dict[tuple[int, tuple[int, ...]], str] = {}
        for name, tensor in training_state(self._module, self._trainer.optimizers):
            known[(tensor.data_ptr(), tuple(tensor.shape))] = name
            grad = getattr(tensor, "grad", None)
            if ":" not in name and grad is not None:
                known[(grad.data_ptr(), tuple(grad.shape))] = f"{name} (gradient)"
        for entry in self.ops:
            pointers = entry.pop("_pointers", [])
            shapes = [tuple(o["shape"]) for o in entry["outputs"]]
            found = [known[k] for k in zip(pointers, shapes, strict=False) if k in known]
            entry.setdefault("tensors", sorted(set(found), key=found.index))

    # ------------------------------------------------------------------ module-level fallback

    def _event(
        self,
        op: str,
        module: str,
        inputs: list[torch.Tensor],
        outputs: list[torch.Tensor],
        tensors: list[str] | None = None,
        phase: str | None = None,
    ) -> None:
        index = len(self.ops)
        self.ops.append(
            {
                "index": index,
                "op": op,
                "phase": phase or self.phase,
                "module": module,
                "tensors": tensors or [],
                "inputs": describe(inputs, [hash_text(t) for t in inputs]),
                "outputs": describe(outputs, [hash_text(t) for t in outputs]),
            }
        )
        for k, tensor in enumerate(outputs):
            copy = host_copy(tensor)
            if copy is not None:
                self.outputs[f"s{self.step}_op{index}_{k}"] = copy

    def _start_modules(self, pl_module: LightningModule) -> None:
        handles = []
        for name, module in pl_module.named_modules():
            handles.append(module.register_forward_hook(self._forward_hook(name)))
            handles.append(module.register_full_backward_hook(self._backward_hook(name)))
        for name, param in pl_module.named_parameters():
            owner = name.rpartition(".")[0]
            handles.append(param.register_post_accumulate_grad_hook(self._grad_hook(owner, name)))
        stack = self._stack
        assert stack is not None  # _start's
        for handle in handles:
            stack.callback(handle.remove)

    def _forward_hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            self._event("module output", name, tensors_of(args), tensors_of(output))

        return hook

    def _backward_hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, grad_input: Any, grad_output: Any) -> None:
            self._event(
                "module input gradient", name, tensors_of(grad_output), tensors_of(grad_input)
            )

        return hook

    def _grad_hook(self, owner: str, name: str) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            self._event(
                "parameter gradient",
                owner,
                [],
                [cast(torch.Tensor, param.grad)],  # set: the hook runs after accumulation
                [f"{name} (gradient)"],
                "backward",
            )

        return hook

    def _parameter_updates(self, pl_module: LightningModule) -> None:
        for name, param in pl_module.named_parameters():
            owner = name.rpartition(".")[0]
            self._event("parameter update", owner, [], [param], [name], "optimizer")

    # ------------------------------------------------------------------ the result

    def module_types(self, pl_module: LightningModule) -> dict[str, str]:
        return {name: type(module).__name__ for name, module in pl_module.named_modules()}

    def write(self, out: Path, pl_module: LightningModule) -> None:
        def rows(items: list[torch.Tensor]) -> list[list[str]]:
            return [[hex64(int(v)) for v in t.cpu().tolist()] for t in items]

        data = {
            "format_version": REPLAY_FORMAT_VERSION,
            "level": self.level,
            "debug_mode": has_debug_mode(),
            "hash": HASH_KIND,
            "torch": torch.__version__,
            "rank": self.options.rank,
            "steps": self.step,
            "log_step": self.options.log_step,
            "logged_steps": sorted(int(k) for k in self.logged),
            "parameters": self.names,
            "module_types": self.module_types(pl_module),
            "init": rows([self.init])[0],
            "state_names": self.state_names,
            "states": state_rows(self.state_names, self.states),
            "batches": rows(self.batches),
            "ops": self.logged,
        }
        # numpy's stub reads **kwds as possibly its allow_pickle: the names are ours (s<step>_op...)
        np.savez(out / REPLAY_OUTPUTS_FILE, **cast("dict[str, Any]", self.outputs))
        write_json_atomic(out / REPLAY_FILE, data)
