"""``settings.params`` as the user's build function sees it: read-only, and a missing key names
the params the cell has (a typo in ``settings.params["widht"]`` says what is there)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any


class MissingParam(KeyError):
    """A param the cell does not have; its message lists those it has."""

    def __str__(self) -> str:  # KeyError's own quotes the whole message
        return str(self.args[0]) if self.args else ""


class Params(Mapping[str, Any]):
    """A read-only mapping of the cell's params (nested mappings read-only too)."""

    def __init__(self, values: Mapping[str, Any], read_only: Any) -> None:
        self._values = MappingProxyType({k: read_only(v) for k, v in values.items()})

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            have = ", ".join(repr(k) for k in sorted(self._values)) or "none"
            raise MissingParam(
                f"{key!r}: the cell has no such param (its params: {have}); set it in "
                "workload.params or an axis's params, or use settings.params.get"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Params({dict(self._values)!r})"
