"""The source of ``spec_fields.py``: ``RunSpec`` written out from the settings table.

A class a type checker reads (``spec.threads`` is an ``int``), generated rather than built at
run time: ``python -m harness.matrix.docs`` rewrites it with the docs, and a test fails when
the committed copy differs from the table (tests/test_settings_table.py).
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from harness.contract.settings import SETTINGS, Setting
from harness.contract.spec_base import RUN_FIELDS

#: The Python type of each ``Setting.kind``, as the generated source spells it.
KIND_TYPES = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "image": "str",
    "params": "dict[str, Any]",
}

HEADER = '''\
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

'''

FOOTER = """
    def __post_init__(self) -> None:
        check_spec(self, SETTINGS)
"""


def _literal(value: Any) -> str:
    """``value`` as Python source in ruff's style (double quotes)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return (
            "field(default_factory=dict)"
            if not value
            else f"field(default_factory=lambda: {value!r})"
        )
    return repr(value)


def _comment(text: str) -> list[str]:
    return [f"    #: {line}" for line in textwrap.wrap(text.replace("`", ""), 92)] if text else []


def _setting_lines(setting: Setting) -> list[str]:
    annotation = KIND_TYPES[setting.kind] + (" | None" if setting.nullable else "")
    line = f"    {setting.name}: {annotation} = {_literal(setting.default)}"
    return [*_comment(setting.doc), line]


def spec_source(table: tuple[Setting, ...] = SETTINGS) -> str:
    """The text of ``spec_fields.py`` for ``table``."""
    lines: list[str] = []
    for setting in table:
        lines += _setting_lines(setting)
    for run_field in RUN_FIELDS:
        lines += _comment(run_field.comment)
        lines.append(
            f"    {run_field.name}: {run_field.annotation} = {_literal(run_field.default)}"
        )
    return HEADER + "\n".join(lines) + "\n" + FOOTER
