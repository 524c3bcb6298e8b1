"""A test plugin for the API's edges: what arguments reach a method, what a result becomes."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Any

import msgspec

import isoplug


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Pair:
    left: int
    right: int


class Version(msgspec.Struct):
    major: int
    minor: int


class Point:
    """A plain class: nothing says how to send it."""

    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y


#: One value of each kind the table in docs/plugins.md lists, as a plugin would return it.
SAMPLES: dict[str, Any] = {
    "none": None,
    "bool": True,
    "int": -(2**63),
    "big_int": 2**64 - 1,
    "float": 1.5,
    "str": "text",
    "bytes": b"\x00\xff",
    "list": [1, "a"],
    "tuple": (1, "a"),
    "set": {7},
    "frozenset": frozenset({8}),
    "dict": {"k": [1]},
    "bytearray": bytearray(b"ba"),
    "memoryview": memoryview(b"mv"),
    "aware_datetime": datetime.datetime(
        2024, 5, 6, 9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    ),
    "naive_datetime": datetime.datetime(2024, 5, 6, 9, 30),
    "date": datetime.date(2024, 5, 6),
    "time": datetime.time(9, 30),
    "timedelta": datetime.timedelta(seconds=90),
    "decimal": decimal.Decimal("1.10"),
    "uuid": uuid.UUID(int=1),
    "enum": Colour.RED,
    "dataclass": Pair(1, 2),
    "struct": Version(1, 2),
}


class Traps(isoplug.Plugin):
    @isoplug.method
    async def hello(self, name: str, greeting: str = "hello") -> str:
        return f"{greeting} {name}"

    @isoplug.method
    async def wait_for_job(self, job: str, timeout: float) -> str:
        """A parameter named ``timeout``: the plugin's own, not isoplug's."""
        await asyncio.sleep(0)
        return f"{job} within {timeout}"

    @isoplug.method
    def spread(self, first: Any, /, *rest: Any, **named: Any) -> dict[str, Any]:
        """Sync, positional-only, variadic: what arrived, in order."""
        return {"first": first, "rest": list(rest), "named": named}

    @isoplug.method
    async def names_isoplug_uses(
        self, plugin_id: str, method: str, args: list[int], kwargs: dict[str, int]
    ) -> list[Any]:
        return [plugin_id, method, args, kwargs]

    @isoplug.method
    async def nap(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    @isoplug.on_event("noted")
    def noted(self, payload: Any) -> None:
        """Subscribed, so that the host has a runner to publish to."""

    @isoplug.method
    async def keyword_only(self, *, name: str) -> str:
        return name

    @isoplug.method
    async def points(self, count: int) -> dict[str, Any]:
        return {"points": [(0, 0), (1, 1), Point(2, 2)][:count], "count": count}

    @isoplug.method
    async def nested_unencodable(self) -> list[Any]:
        return [{"ok": 1}, {"pairs": [Pair(1, 2), {"bad": {1j: "complex key"}}]}]

    @isoplug.method
    async def too_big_int(self) -> dict[str, int]:
        return {"n": 2**64}

    @isoplug.method
    async def self_containing(self) -> list[Any]:
        loop: list[Any] = [1]
        loop.append(loop)
        return loop

    @isoplug.method
    def blob(self, size: int) -> bytes:
        return b"x" * size

    @isoplug.method
    async def samples(self) -> dict[str, Any]:
        return SAMPLES

    @isoplug.method
    async def arrived(self, values: dict[str, Any]) -> dict[str, list[Any]]:
        """What the host's arguments became here: each value's type name and the value (sent
        back as it crossed: a str stays a str)."""
        return {key: [type(value).__name__, value] for key, value in values.items()}

    @isoplug.method
    async def sample_kinds(self) -> list[str]:
        """The keys of SAMPLES, so that the host can send them (it cannot import this)."""
        return list(SAMPLES)
