"""A plugin for the tests of isoplug.testing's harnesses: it numbers its greetings in its log
records, logs at DEBUG too, takes a configuration, never answers one method, and says when its
teardown runs."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_greeter"]

_CODE = """
import asyncio

import msgspec

import isoplug


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    greeting: str = "Hello"


class Greeter(isoplug.Plugin):
    config_schema = Settings

    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx
        self.greeted = 0

    @isoplug.method
    async def greet(self, name: str) -> str:
        self.greeted += 1
        # DEBUG first: once the INFO record has arrived, a DEBUG one sent would have too.
        self.ctx.logger.debug("greeted %d so far", self.greeted)
        self.ctx.logger.info("greeting %s #%d", name, self.greeted)
        return f"{self.ctx.config.greeting}, {name}!"

    @isoplug.method
    async def never(self) -> None:
        await asyncio.sleep(3600)

    async def teardown(self) -> None:
        self.ctx.logger.warning("teardown ran after %d greeting(s)", self.greeted)
"""


def write_greeter(root: Path, name: str = "greeter") -> Path:
    """The plugin's folder ``root/name`` (its id is ``name``)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        f'id = "{name}"\nversion = "1.0"\nentry = "{name}_code:Greeter"\n'
    )
    (folder / f"{name}_code.py").write_text(_CODE)
    return folder
