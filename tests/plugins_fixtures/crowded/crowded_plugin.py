"""A test plugin that declares one method more than the host accepts, and an event name 50
characters too long: the host must refuse it, naming it, whatever its runner reports."""

from __future__ import annotations

from typing import Any

import isoplug
from isoplug.control import MAX_OFFERED_NAME_CHARS, MAX_OFFERED_NAMES

METHODS = MAX_OFFERED_NAMES + 1
LONG_EVENT = "e" * (MAX_OFFERED_NAME_CHARS + 50)


def _method(number: int) -> Any:
    async def method(self: Any) -> int:
        return number

    return isoplug.method(name=f"m{number:05d}")(method)


async def _on_long(self: Any, payload: Any) -> None:
    pass


Crowded = type(
    "Crowded",
    (isoplug.Plugin,),
    {
        **{f"m{number:05d}": _method(number) for number in range(METHODS)},
        "on_long": isoplug.on_event(LONG_EVENT)(_on_long),
    },
)
