"""A test plugin without a config schema that tries to change ``ctx.config`` in place."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import isoplug


class ConfigUntyped(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    @isoplug.method
    async def mutate(self) -> dict[str, str]:
        config: Any = self.ctx.config
        attempts: dict[str, Callable[[], object]] = {
            "top": lambda: operator.setitem(config, "new", 1),
            "nested": lambda: operator.setitem(config["db"], "port", 2),
            "list": lambda: config["tags"].append("b"),
        }
        outcomes = {}
        for name, attempt in attempts.items():
            try:
                attempt()
            except (TypeError, AttributeError) as exc:
                outcomes[name] = type(exc).__name__
            else:
                outcomes[name] = "changed"
        return outcomes

    @isoplug.method
    async def config(self) -> Any:
        """The read-only configuration itself, as a result: it must travel like a dict."""
        return self.ctx.config
