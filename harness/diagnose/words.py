"""A diagnosis in words: the sentences the terminal prints, diagnosis.md and the report show."""

from __future__ import annotations

import json
import re
from typing import Any

from harness.contract.machine import Machine, differences, fingerprint
from harness.diagnose.findings import Finding, OpFinding
from harness.report.inert_text import defuse_commands, neutralise_links
from harness.text import strip_controls

PHASES = {
    "forward": "in the forward pass",
    "backward": "in the backward pass",
    "between backward and optimizer": "between the backward pass and the optimizer step",
    "optimizer": "in the optimizer step",
    "collective": "in a collective (the gradients' all-reduce)",
}


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _shapes(described: list[dict[str, Any]]) -> str:
    parts = [f"{list(d['shape'])} {d['dtype']}" for d in described]
    return " and ".join(parts) if parts else "none"


def _ordinal(indices: list[int]) -> str:
    names = ["first", "second", "third", "fourth", "fifth"]
    words = [names[i] if i < len(names) else f"#{i + 1}" for i in indices]
    return ", ".join(words)


def _module(op: OpFinding) -> str:
    if op.module is None:
        return "outside every module"
    if op.module == "":
        return f"in the LightningModule itself ({op.module_type or 'its forward'})"
    kind = f" ({op.module_type})" if op.module_type else ""
    return f"in module {_code(op.module)}{kind}"


def _delta(op: OpFinding) -> str:
    parts = []
    if op.max_abs_delta is not None:
        parts.append(f"max |Δ| {op.max_abs_delta:.3g}")
    if op.max_ulps is not None:
        parts.append(f"{op.max_ulps} ULP" + ("s" if op.max_ulps != 1 else ""))
    return f" ({', '.join(parts)})" if parts else ""


#: Settings that make a different model: runs that differ in one need not share a weight.
MODEL_SETTINGS = ("model", "hidden_size")


def _json(value: Any) -> str:
    """A value as a matrix file shows it, its type kept (``1``, ``true`` and ``1.0`` differ)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def setting_differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The settings two runs differ in, as ``(name, value in a, value in b)``, each key of
    ``params`` as ``params.<key>``; a setting one side lacks counts as null there."""

    def flat(settings: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in settings.items() if k != "params"}
        params = settings.get("params")
        if isinstance(params, dict):
            out.update({f"params.{k}": v for k, v in params.items()})
        return out

    x, y = flat(a), flat(b)
    keys = [*x, *(k for k in y if k not in x)]
    return [(k, x.get(k), y.get(k)) for k in keys if _json(x.get(k)) != _json(y.get(k))]


def _named(differ: list[tuple[str, Any, Any]]) -> str:
    """``hidden_size` (`32` and `64`)``: the first three settings two runs differ in."""
    parts = [f"{_code(k)} ({_code(_json(x))} and {_code(_json(y))})" for k, x, y in differ[:3]]
    more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
    return ", ".join(parts) + more


def _weights_cause(
    placements: set[str | None], differ: list[tuple[str, Any, Any]] | None = None
) -> str:
    """Why the initial weights differ: first what the two runs were set to differently (two
    cells of other model sizes), then where the seed was set, then the seed itself."""
    differ = differ or []
    model = [d for d in differ if d[0] in MODEL_SETTINGS]
    if model:
        return (
            f"the two runs build different models ({_named(model)}), so their initial "
            "weights cannot be the same"
        )
    seed = [d for d in differ if d[0] == "seed"]
    if seed and not placements & {"none", "before_trainer"}:
        return f"the two runs use different seeds ({_named(seed)})"
    if differ and not placements & {"none", "before_trainer"}:
        return (
            f"the two runs differ in {_named(differ)}; where that does not change the model "
            "as created, the seed was not set before the model was created, or the random "
            "number generator was consumed differently before it"
        )
    if placements == {"none"}:
        return "the seed is never set (placement `none`), so each run draws its own initial weights"
    if placements == {"before_trainer"}:
        return (
            "the seed is set only after the model is created (placement `before_trainer`), so "
            "the initial weights come from an unseeded generator"
        )
    return (
        "the seed was not set before the model was created, or the random number generator "
        "was consumed differently before it"
    )


def _data(f: Finding) -> str:
    if f.split_same is True:
        split = "The data split is the same in both runs"
    elif f.split_same is False:
        split = "The data split differs too"
    else:
        split = "The data split was not recorded"
    if f.batch is None:
        return f"{split}; every replayed batch is the same."
    which = " and ".join(k for k in ("inputs", "labels") if f.batch[k]) or "contents"
    return f"{split}; batch {f.batch['step']} is the first whose {which} differ."


def _moved(a: Machine | None, b: Machine | None) -> str | None:
    """`` (CPU capability AVX512 vs AVX2)``, the words for two recorded machines that differ
    (empty when only the fingerprints tell); None when they agree or either is not recorded."""
    if a is None or b is None or not fingerprint(a) or not fingerprint(b):
        return None
    if fingerprint(a) == fingerprint(b):
        return None
    words = differences(a, b)
    return f" ({'; '.join(words)})" if words else ""


def machine_sentences(
    recorded: tuple[Machine | None, Machine | None],
    replayed: tuple[Machine | None, Machine | None],
) -> list[str]:
    """What the machines say about the diagnosis, before anything else: the two recorded runs
    ran on different machines (the replays, on one, cannot show what the machines did
    differently), or the replays ran on another machine than the recorded runs (its kernels
    may part ways elsewhere). Nothing where the machines agree or were not recorded."""
    out = []
    ra, rb = recorded
    words = _moved(ra, rb)
    if words is not None:
        assert ra is not None and rb is not None
        out.append(
            f"The two runs ran on different machines, `{ra.fingerprint}` and "
            f"`{rb.fingerprint}`{words}: the machines alone can make their bits differ, and "
            "the replays, which both ran on one machine, cannot show that part."
        )
    for run, replay in zip(recorded, replayed, strict=True):
        words = _moved(run, replay)
        if words is not None:
            assert run is not None and replay is not None
            out.append(
                f"The replays ran on machine `{replay.fingerprint}`, not on `{run.fingerprint}` "
                f"where the recorded run ran{words}: what follows is where they part ways on "
                "this machine, which need not be where the recorded runs did."
            )
            break
    return out


def sentences(
    f: Finding,
    recorded_loss_step: int | None,
    placements: set[str | None],
    recorded_weights_step: int | None = None,
    differ: list[tuple[str, Any, Any]] | None = None,
) -> list[str]:
    """The diagnosis, earliest cause first, then what the recorded weights and losses showed;
    ``differ``: the settings the two runs differ in (``setting_differences``)."""
    out: list[str] = []
    if f.kind == "initial_weights":
        first = f.parameters_differ[0] if f.parameters_differ else "?"
        out.append(
            f"The initial weights already differ: {_code(first)} is the first parameter whose "
            f"bits differ ({len(f.parameters_differ)} of {f.parameters} parameters differ): "
            f"{_weights_cause(placements, differ)}."
        )
        out.append(_data(f))
        return out
    if f.kind == "data":
        assert f.batch is not None
        out.append("The initial weights are equal, but the two runs see different data.")
        out.append(_data(f))
    elif f.kind in ("operation", "different_operations") and f.op is not None:
        out.extend(_operation(f, f.op))
    elif f.kind == "state":
        out.append(_state(f))
    elif f.kind == "different_operations":
        out.append(
            f"The two runs ran different numbers of operations at step {f.state_step}, with "
            "equal outputs as far as both went."
        )
    else:
        return _no_divergence(f, recorded_loss_step, recorded_weights_step)
    return out + _recorded_steps(f, recorded_loss_step, recorded_weights_step)


def _no_divergence(
    f: Finding, recorded_loss_step: int | None, recorded_weights_step: int | None
) -> list[str]:
    """The replays agreed: what the records showed, which did not happen again."""
    out = [
        f"The two runs did not diverge in {f.steps_replayed} replayed "
        f"step{'s' if f.steps_replayed != 1 else ''}: no nondeterminism showed up in this "
        "replay."
    ]
    recorded = [
        f"{what} differ from step {step}"
        for what, step in (("weights", recorded_weights_step), ("losses", recorded_loss_step))
        if step is not None
    ]
    if not recorded:
        out.append("Their records agree as well.")
    else:
        out.append(
            f"The recorded runs' {' and '.join(recorded)}: what made them differ (timing, "
            "scheduling, another machine) did not happen again; replaying again may show it."
        )
    return out


def _recorded_steps(
    f: Finding, recorded_loss_step: int | None, recorded_weights_step: int | None
) -> list[str]:
    """Where the recorded weights and losses first differ, against the replay's first step."""
    out: list[str] = []
    start = f.op.step if f.op is not None else f.state_step
    if start is None:  # the state never differed: the replays' loss did
        start = f.loss_step
    if recorded_weights_step is not None and recorded_weights_step != start:
        out.append(
            f"The recorded weights (hashed after every step) first differ after step "
            f"{recorded_weights_step}."
        )
    if recorded_loss_step is not None:
        if start is not None and recorded_loss_step > start:
            hidden = recorded_loss_step - start
            out.append(
                f"The losses first differ only at step {recorded_loss_step}: the loss "
                f"trajectory hid this divergence for {hidden} step{'s' if hidden != 1 else ''}."
            )
        else:
            out.append(f"The losses first differ at step {recorded_loss_step}.")
    return out


def _state(f: Finding) -> str:
    """A difference no logged operation's output shows: in the training state after a step,
    or, where the state never differed in the replayed steps, in the loss alone."""
    outside = (
        "the difference came from outside what was logged (a collective the dispatcher does "
        "not see, or inside a module when only module outputs were logged)."
    )
    if f.state_step is None:
        steps = f"{f.steps_replayed} replayed step{'s' if f.steps_replayed != 1 else ''}"
        return (
            f"The losses first differ at step {f.loss_step}, while the training state "
            f"(parameters and optimizer state) never differed in the {steps}, and no logged "
            f"operation's output differed at that step: {outside}"
        )
    names = ", ".join(_code(n) for n in f.state_differs[:3])
    return (
        f"The training state first differs after step {f.state_step} ({names}), but no logged "
        f"operation's output differed at that step: {outside}"
    )


def _operation(f: Finding, op: OpFinding) -> list[str]:
    level = "every aten operation logged with DebugMode"
    if f.level != "ops":
        level = "module level: module outputs, gradients and parameter updates, from hooks"
        if not f.debug_mode:
            level += ", as this torch has no DebugMode"
    made = f", producing {', '.join(_code(t) for t in op.tensors)}" if op.tensors else ""
    if op.other_op:
        first = (
            f"The two runs ran different operations at step {op.step}: operation {op.index} is "
            f"{_code(op.op)} in the first and {_code(op.other_op)} in the second "
            f"({PHASES.get(op.phase, op.phase)}, {_module(op)})."
        )
        return [first]
    what = f"operation whose output bits differ is {_code(op.op)}"
    if f.level != "ops":
        what = f"logged value whose bits differ is the {op.op}"
    inputs = f"inputs {_shapes(op.inputs)}, " if op.inputs else ""
    unit = "operation" if f.level == "ops" else "value"
    first = (
        f"The first {what} at step {op.step}, {PHASES.get(op.phase, op.phase)}, {_module(op)}"
        f"{made}: {inputs}output {_shapes(op.outputs)} ({unit} {op.index + 1} of {op.of} at "
        f"that step; {level})."
    )
    if not op.inputs:
        second = (
            "Everything logged before it was equal in both runs, so the difference arose here"
            f"{_delta(op)}."
        )
    elif op.inputs_equal:
        second = (
            "Its inputs were equal in both runs, so this operation itself produced the "
            f"difference{_delta(op)}."
        )
    elif not op.differing_inputs:
        second = (
            "Its inputs that were hashed were equal in both runs, but some could not be hashed "
            "(a sparse or quantized tensor): the difference arose here or came in with those"
            f"{_delta(op)}."
        )
    else:
        second = (
            f"Its {_ordinal(op.differing_inputs)} input already differed, so the difference "
            f"came in earlier, outside the logged operations{_delta(op)}."
        )
    out = [first, second]
    if f.state_differs:
        names = ", ".join(_code(n) for n in f.state_differs[:3])
        more = f" and {len(f.state_differs) - 3} more" if len(f.state_differs) > 3 else ""
        out.append(f"After step {f.state_step} the training state differs in {names}{more}.")
    return out


#: What Markdown acts on, outside a code span: each is escaped with a backslash (the pipe too,
#: so that text in a table cell cannot end it).
_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")
#: A code span the sentences hold (``_code``): kept as code, its content made inert.
_SPAN = re.compile(r"(`[^`]*`)")


def _plain(text: object) -> str:
    """Text from a diagnosis (anything may have written diagnosis.json) inert in Markdown: one
    line, no controls, no HTML, no emphasis, links or table pipes, no workflow command."""
    s = re.sub(r"\s+", " ", strip_controls(str(text)))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return defuse_commands(neutralise_links(_SPECIAL.sub(r"\\\1", s)))


def _span(content: object, in_table: bool = False) -> str:
    """A code span of ``content``: literal in Markdown, but a line break or a backtick would end
    it and, in a table, a pipe would end the cell (GFM reads ``\\|`` there as ``|``)."""
    s = re.sub(r"\s+", " ", strip_controls(str(content))).replace("`", "'").strip() or "-"
    return "`" + (s.replace("|", "\\|") if in_table else s) + "`"


def inline(text: object) -> str:
    """A sentence of a diagnosis as Markdown: its code spans kept as code, the rest inert."""
    parts = _SPAN.split(strip_controls(str(text)))
    return "".join(_span(part[1:-1]) if k % 2 else _plain(part) for k, part in enumerate(parts))


def markdown(title: str, lines: list[str], op: dict[str, Any] | None, anchor: str) -> str:
    """The diagnosis as a Markdown section (diagnosis.md, and the report's); ``op`` is the
    first differing operation as diagnosis.json holds it. Every string in it may come from a
    tampered results folder: each is made inert (``inline``, ``_plain``, ``_span``)."""
    body = [f'<a id="{_plain(anchor)}"></a>', f"### {_plain(title)}", ""]
    body += [f"- {inline(line)}" for line in lines]
    if op is not None:
        delta = op.get("max_abs_delta")
        ulps = op.get("max_ulps")
        answers: dict[Any, str] = {True: "yes", False: "no"}
        equal = answers.get(op.get("inputs_equal"), "not logged")
        cells = [
            _plain(op.get("step")),
            _plain(op.get("phase")),
            _span(op.get("op"), in_table=True),
            _span(op.get("module") or "-", in_table=True),
            _plain(_shapes(op.get("inputs") or [])),
            _plain(_shapes(op.get("outputs") or [])),
            equal,
            "" if delta is None else _plain(f"{delta:.3g}"),
            "" if ulps is None else _plain(ulps),
        ]
        body += [
            "",
            "| step | phase | operation | module | inputs | output | inputs equal | max abs Δ "
            "| ULPs |",
            "|---:|---|---|---|---|---|---|---:|---:|",
            "| " + " | ".join(cells) + " |",
        ]
    return "\n".join(body) + "\n"
