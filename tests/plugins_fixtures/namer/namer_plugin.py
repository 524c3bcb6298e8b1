"""A test plugin whose method and event names are attacker-chosen text: escapes, a forged
column-0 log line, a bidi control; and 30 ordinary methods besides, more than the host lists
in an unknown method's error."""

from __future__ import annotations

from typing import Any

import isoplug

#: What the names carry: each must reach the host's messages escaped, never raw.
HOSTILE = "\x1b[31mRED\x1b[0m\nCRITICAL app.db: FORGED LINE\u202e"
#: Ordinary methods (op00 ... op29): the unknown method's error lists some, counts the rest.
ORDINARY = 30


def _ordinary(number: int) -> Any:
    async def op(self: Any) -> int:
        return number

    return isoplug.method(name=f"op{number:02d}")(op)


class _Weird(isoplug.Plugin):
    @isoplug.method(name="\x01m" + HOSTILE)  # sorted first among the names
    async def weird(self) -> str:
        return "weird"

    @isoplug.on_event("ev" + HOSTILE)
    async def on_weird(self, payload: Any) -> None:
        pass


Namer = type(
    "Namer", (_Weird,), {f"op{number:02d}": _ordinary(number) for number in range(ORDINARY)}
)
