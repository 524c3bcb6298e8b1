"""A misspelled config key is refused wherever the schema can hold a table: msgspec would drop
it silently (the field keeping its default) unless the struct holding it forbids unknown fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, NamedTuple, TypedDict

import msgspec
import pytest

from isoplug import Host
from isoplug.errors import ConfigInvalid, PluginFailed
from isoplug.runner.config import validate_config
from tests.plugins_fixtures import FAST


class Server(msgspec.Struct):
    host: str = "h"
    port: int = 80


class FrozenServer(msgspec.Struct, frozen=True):
    host: str = "h"
    port: int = 80


class Redis(msgspec.Struct, tag="redis"):
    host: str = "h"
    port: int = 6379


class Memory(msgspec.Struct, tag="memory"):
    size: int = 1


@dataclasses.dataclass
class ServerClass:
    host: str = "h"
    port: int = 80


class ServerDict(TypedDict, total=False):
    host: str
    port: int


class ServerPair(NamedTuple):
    first: Server
    second: Server


class Outer(msgspec.Struct):
    inner: Server = msgspec.field(default_factory=Server)


GOOD = {"host": "a", "port": 1}
TYPO = {"host": "a", "prot": 1}

# (the field's type, a value with the typo, the typo's path, the same value spelt right)
SHAPES: list[tuple[Any, Any, str, Any]] = [
    (Server, TYPO, "field.prot", GOOD),
    (Outer, {"inner": TYPO}, "field.inner.prot", {"inner": GOOD}),
    (Server | None, TYPO, "field.prot", GOOD),
    (list[Server], [GOOD, TYPO], "field[1].prot", [GOOD, GOOD]),
    (list[Server] | None, [TYPO], "field[0].prot", [GOOD]),
    (set[FrozenServer], [TYPO], "field[0].prot", [GOOD]),
    (frozenset[FrozenServer], [TYPO], "field[0].prot", [GOOD]),
    (tuple[Server, ...], [GOOD, TYPO], "field[1].prot", [GOOD, GOOD]),
    (tuple[Server, Server], [TYPO, {}], "field[0].prot", [GOOD, {}]),
    (tuple[int, Server], [1, TYPO], "field[1].prot", [1, GOOD]),
    (ServerPair, [GOOD, TYPO], "field[1].prot", [GOOD, GOOD]),
    (dict[str, Server], {"x": TYPO}, "field.x.prot", {"x": GOOD}),
    (dict[str, Server] | None, {"x": TYPO}, "field.x.prot", {"x": GOOD}),
    (dict[str, list[Server]], {"x": [TYPO]}, "field.x[0].prot", {"x": [GOOD]}),
    (Annotated[Server, msgspec.Meta(description="d")], TYPO, "field.prot", GOOD),
    (Annotated[Server, msgspec.Meta(title="t")] | None, TYPO, "field.prot", GOOD),
    (list[Annotated[Server, msgspec.Meta(title="t")]], [TYPO], "field[0].prot", [GOOD]),
    (Redis | Memory, {"type": "redis", **TYPO}, "field.prot", {"type": "redis", **GOOD}),
    (Redis | Memory, {"type": "memory", "sise": 2}, "field.sise", {"type": "memory", "size": 2}),
    (Redis | Memory | None, {"type": "redis", **TYPO}, "field.prot", {"type": "redis", **GOOD}),
    (list[Redis | Memory], [{"type": "memory", "sise": 2}], "field[0].sise", [{"type": "memory"}]),
    (ServerClass, TYPO, "field.prot", GOOD),
    (ServerClass | None, TYPO, "field.prot", GOOD),
    (ServerDict, TYPO, "field.prot", GOOD),
    (list[ServerDict], [TYPO], "field[0].prot", [GOOD]),
    (int | Server, TYPO, "field.prot", GOOD),
]


def plugin_with_field(kind: Any) -> type:
    schema = msgspec.defstruct("Settings", [("field", kind | None, None)])
    return type("P", (), {"config_schema": schema})


@pytest.mark.parametrize(("kind", "typo", "path", "good"), SHAPES, ids=lambda x: repr(x)[:40])
def test_a_typo_is_refused_in_every_shape_that_holds_a_table(
    kind: Any, typo: Any, path: str, good: Any
) -> None:
    plugin = plugin_with_field(kind)
    with pytest.raises(ConfigInvalid) as caught:
        validate_config("typo", plugin, {"field": typo})
    assert f"config field {path!r}: is not a known field" in str(caught.value)
    validate_config("typo", plugin, {"field": good})


def test_a_table_with_an_unknown_tag_is_left_to_msgspec_to_refuse() -> None:
    plugin = plugin_with_field(Redis | Memory)
    with pytest.raises(ConfigInvalid) as caught:
        validate_config("typo", plugin, {"field": {"type": "redsi", "prot": 1}})
    assert "is not a known field" not in str(caught.value)
    assert "redsi" in str(caught.value)


TAGGED_PLUGIN = """\
import msgspec

import isoplug


class Redis(msgspec.Struct, tag="redis"):
    host: str = "localhost"
    port: int = 6379


class Memory(msgspec.Struct, tag="memory"):
    size: int = 1


class Settings(msgspec.Struct):
    backend: Redis | Memory = msgspec.field(default_factory=Memory)


class Cache(isoplug.Plugin):
    config_schema = Settings

    async def setup(self, ctx):
        self.settings = ctx.config
"""


async def test_a_typo_in_a_tagged_union_table_of_plugin_toml_fails_the_plugin(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "plugin.toml").write_text(
        'id = "cache"\nversion = "1"\nentry = "cache:Cache"\n[restart]\npolicy = "never"\n'
        '[config.backend]\ntype = "redis"\nhots = "db.internal"\n'
    )
    (folder / "cache.py").write_text(TAGGED_PLUGIN)
    async with Host(tmp_path, config=FAST) as host:
        with pytest.raises(PluginFailed) as caught:
            await host.wait_ready(timeout=30)
    assert "config field 'backend.hots': is not a known field" in str(caught.value)
