"""The loaded plugins of one runner, and routing calls and events to them.

:class:`LoadedPlugin` wraps one plugin instance with the methods and event subscriptions its
decorators declared. :class:`PluginTable` answers the host's calls: unknown plugin or method,
and arguments that do not fit the signature, become a :class:`~isoplug.control.CallOutcome`
carrying the code of :class:`~isoplug.errors.MethodNotFound` /
:class:`~isoplug.errors.InvalidParams`, so the host raises the right exception.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Callable
from typing import Any

from isoplug.control import CallOutcome, CallRequest, EventDelivery, PluginSummary
from isoplug.logs.sources import current_source
from isoplug.runner.api import EVENTS_MARK, METHOD_MARK, Plugin
from isoplug.wire import ErrorInfo

__all__ = ["LoadedPlugin", "PluginTable", "plugin_source"]

_log = logging.getLogger("isoplug.runner")

#: Traceback text returned for a failed call; a deep recursion must not fill a frame.
_MAX_TRACEBACK_CHARS = 32 * 1024


def plugin_source(plugin_id: str) -> str:
    """The :data:`~isoplug.logs.sources.current_source` of a plugin's code: its logger's name,
    so that what it prints or fails with lands on ``plugin.<id>.stdout`` / ``plugin.<id>``."""
    return f"plugin.{plugin_id}"


class LoadedPlugin:
    """A plugin instance and what the host may do with it."""

    def __init__(self, plugin_id: str, instance: Plugin) -> None:
        self.plugin_id = plugin_id
        self.instance = instance
        self.source = plugin_source(plugin_id)
        self.methods: dict[str, Callable[..., Any]] = {}
        self.subscriptions: dict[str, list[Callable[..., Any]]] = {}
        for attribute in dir(type(instance)):
            function = getattr(type(instance), attribute, None)
            if function is None:
                continue
            bound = getattr(instance, attribute)
            name = getattr(function, METHOD_MARK, None)
            if isinstance(name, str):
                self.methods[name] = bound
            for event in getattr(function, EVENTS_MARK, ()):
                self.subscriptions.setdefault(event, []).append(bound)

    def summary(self) -> PluginSummary:
        return PluginSummary(
            methods=tuple(sorted(self.methods)), events=tuple(sorted(self.subscriptions))
        )


class PluginTable:
    """Every plugin of this runner, by id."""

    def __init__(self) -> None:
        self.plugins: dict[str, LoadedPlugin] = {}

    def add(self, plugin: LoadedPlugin) -> None:
        self.plugins[plugin.plugin_id] = plugin

    async def call(self, request: CallRequest) -> CallOutcome:
        """Run one method call. Never raises except :class:`asyncio.CancelledError`."""
        plugin = self.plugins.get(request.plugin)
        if plugin is None:
            return _failure(
                "method_not_found",
                "isoplug.errors.MethodNotFound",
                f"runner has no plugin {request.plugin!r} (it hosts: "
                f"{', '.join(sorted(self.plugins)) or 'none'})",
            )
        function = plugin.methods.get(request.method)
        if function is None:
            available = ", ".join(sorted(plugin.methods)) or "none"
            return _failure(
                "method_not_found",
                "isoplug.errors.MethodNotFound",
                f"plugin {plugin.plugin_id!r} has no method {request.method!r}; "
                f"available methods: {available}",
            )
        try:
            inspect.signature(function).bind(**request.kwargs)
        except TypeError as exc:
            return _failure(
                "invalid_params",
                "isoplug.errors.InvalidParams",
                f"arguments do not fit {plugin.plugin_id}.{request.method}"
                f"{inspect.signature(function)}: {exc}",
            )
        # The call's output is the plugin's, in its tasks and worker thread too (to_thread
        # copies the context). The request runs in a task of its own: the value is reset below
        # only for tidiness.
        source = current_source.set(plugin.source)
        try:
            if inspect.iscoroutinefunction(function):
                result = await function(**request.kwargs)
            else:
                result = await asyncio.to_thread(function, **request.kwargs)
        except Exception as exc:
            return _failure(
                "error",
                f"{type(exc).__module__}.{type(exc).__qualname__}",
                str(exc),
                _traceback_text(exc),
            )
        finally:
            current_source.reset(source)
        return CallOutcome(result=result)

    async def deliver(self, delivery: EventDelivery) -> None:
        """Hand an event to every subscriber, one after another; failures are logged."""
        for plugin in self.plugins.values():
            for subscriber in plugin.subscriptions.get(delivery.event, ()):
                source = current_source.set(plugin.source)
                try:
                    if inspect.iscoroutinefunction(subscriber):
                        await subscriber(delivery.payload)
                    else:
                        await asyncio.to_thread(subscriber, delivery.payload)
                except Exception:
                    _log.exception(
                        "plugin %r: handler for event %r failed", plugin.plugin_id, delivery.event
                    )
                finally:
                    current_source.reset(source)


def _failure(code: str, type_name: str, message: str, traceback_text: str = "") -> CallOutcome:
    return CallOutcome(
        error=ErrorInfo(code=code, type=type_name, message=message, traceback=traceback_text)
    )


def _traceback_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    if len(text) > _MAX_TRACEBACK_CHARS:
        half = _MAX_TRACEBACK_CHARS // 2
        text = text[:half] + "\n[... traceback truncated ...]\n" + text[-half:]
    return text
