"""The plugin API: what a plugin author writes against.

::

    import isoplug

    class Greeter(isoplug.Plugin):
        async def setup(self, ctx: isoplug.PluginContext) -> None:
            self.ctx = ctx                       # keep it: logger, call_host, plugin_id

        @isoplug.method
        async def greet(self, name: str) -> str:  # host: await host.call("greeter", "greet",
            return f"hello {name}"                #                       name="Ada")

        @isoplug.method
        def checksum(self, data: bytes) -> int:  # sync: runs in a worker thread
            return sum(data)

        @isoplug.on_event("tick")
        async def on_tick(self, payload: object) -> None:
            self.ctx.logger.info("tick %s", payload)

Methods take the positional and keyword arguments ``host.call(id, name, *args, **kwargs)``
passes (any parameter names: the host reserves none), and return what can cross the process
boundary (the table in docs/plugins.md says what arrives as what). ``async def`` methods run
on the runner's event loop and must not block it (a blocked loop fails the health check and
the runner is restarted); plain ``def`` methods run in a worker thread.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar, overload

from isoplug.control import CapabilityDenied
from isoplug.control.interpreter_only import isoplug_import_folders
from isoplug.errors import IsoplugError
from isoplug.logs import (
    ADDRESS_ENV,
    LEVEL_ENV,
    NAME_ENV,
    TOKEN_ENV,
    ForwardingHandler,
    forward_logs,
)
from isoplug.logs.kept_forwarder import kept_forwarder

__all__ = ["Plugin", "PluginContext", "method", "on_event"]

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute set on a function by :func:`method`: the name the host calls it by.
METHOD_MARK = "__isoplug_method__"
#: Attribute set on a function by :func:`on_event`: the event names it subscribes to.
EVENTS_MARK = "__isoplug_events__"

CallHost = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


class PluginContext:
    """What the runner gives a plugin in :meth:`Plugin.setup`.

    ``plugin_id`` is the id from the manifest; ``logger`` is a standard :mod:`logging` logger
    named ``plugin.<id>`` (its records reach the host); ``config`` is its configuration (see
    :attr:`Plugin.config_schema`); :meth:`call_host` calls a capability the host registered.
    """

    def __init__(
        self,
        plugin_id: str,
        capabilities: frozenset[str],
        call_host: CallHost,
        config: Any = None,
    ) -> None:
        self.plugin_id = plugin_id
        self.logger = logging.getLogger(f"plugin.{plugin_id}")
        self.capabilities = capabilities
        #: The plugin's configuration: an instance of its ``config_schema`` (a
        #: ``msgspec.Struct``) when it declares one, else the ``[config]`` table, read-only.
        #: Updated when a new configuration is taken live (``on_config``).
        self.config: Any = config if config is not None else {}
        self._call_host = call_host

    async def call_host(self, capability: str, /, **kwargs: Any) -> Any:
        """Call the host capability ``capability`` with keyword arguments; return its result.

        Raises :class:`~isoplug.CapabilityDenied` when the manifest does not list it
        in ``capabilities`` (the host checks again on its side), and
        :class:`~isoplug.errors.RemoteError` when the capability itself failed. A cancel point.
        """
        if capability not in self.capabilities:
            granted = ", ".join(sorted(self.capabilities)) or "none"
            raise CapabilityDenied(
                f"plugin {self.plugin_id!r} may not call host capability {capability!r}: "
                f"add it to 'capabilities' in its plugin.toml (granted: {granted})"
            )
        return await self._call_host(self.plugin_id, capability, kwargs)

    def log_initializer(self) -> Callable[[], object]:
        """An ``initializer`` for a process pool whose workers do not fork from the runner
        (``multiprocessing``'s ``spawn`` and ``forkserver``): each worker then forwards its
        records, at the level the runner's root logger has now, and they arrive as the
        plugin's, as a forked worker's do anyway::

            context = multiprocessing.get_context("spawn")
            ProcessPoolExecutor(mp_context=context, initializer=self.ctx.log_initializer())

        Raises :class:`~isoplug.errors.IsoplugError` in a runner that forwards no logs (its
        log connection failed at start: its output goes to stderr).
        """
        address, token, name = self._forwarder().child_settings()
        return functools.partial(
            forward_logs,
            address,
            token,
            name=name,
            level=logging.getLogger().getEffectiveLevel(),
        )

    def log_child_env(self) -> dict[str, str]:
        """The environment variables that make :func:`isoplug.logs.forward_logs`, called with
        no address in a child process (``subprocess`` with ``env={**os.environ,
        **ctx.log_child_env()}``), send its records as the plugin's, at the level the runner's
        root logger has now (unless the child configures its logging first). Where the host
        put isoplug's folder on the runner's ``PYTHONPATH`` (which the plugin's own
        ``os.environ`` does not show), ``PYTHONPATH`` too, that folder before the plugin's
        entries: the child imports the runner's isoplug, even on a plugin's own interpreter
        that has none. Raises as :meth:`log_initializer` does."""
        address, token, name = self._forwarder().child_settings()
        level = str(logging.getLogger().getEffectiveLevel())
        env = {ADDRESS_ENV: address, TOKEN_ENV: token, NAME_ENV: name, LEVEL_ENV: level}
        if folders := isoplug_import_folders():
            own = os.environ.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join([*folders, *([own] if own else [])])
        return env

    def _forwarder(self) -> ForwardingHandler:
        handler = kept_forwarder()
        if handler is None:
            raise IsoplugError(
                f"plugin {self.plugin_id!r}: its runner forwards no logs (its log connection "
                "to the host failed at start), so its child processes cannot either"
            )
        return handler


class Plugin:
    """Base class of plugins. Override :meth:`setup` and :meth:`teardown` as needed.

    The runner creates the instance with no arguments, awaits :meth:`setup` before the plugin
    is reported ready, and awaits :meth:`teardown` when the runner is asked to shut down (not
    when it crashes). Either may be overridden by a plain ``def``, run on the loop. An
    exception from ``setup`` is reported to the host with its traceback and the runner is
    restarted according to the plugin's restart policy.

    A plugin that defines ``async def on_config(self, config)`` takes a new configuration
    (``Host.set_config``, or a ``[config]`` edited under hot reload) live: it is called with
    the validated configuration, and ``ctx.config`` is updated. Without it, a new
    configuration restarts the plugin's runner.
    """

    #: The schema of the plugin's configuration, a ``msgspec.Struct`` subclass: the
    #: ``[config]`` table of plugin.toml, with the host's overrides, is validated against it
    #: in the runner, and ``ctx.config`` is an instance of it. None: no schema.
    config_schema: ClassVar[type | None] = None

    async def setup(self, ctx: PluginContext) -> None:
        """Prepare the plugin; ``ctx`` stays valid for the plugin's lifetime."""

    async def teardown(self) -> None:
        """Release what :meth:`setup` acquired. Bounded by the runner's teardown deadline."""


@overload
def method(function: F, /) -> F: ...
@overload
def method(*, name: str | None = None) -> Callable[[F], F]: ...
def method(function: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Mark a plugin method as callable by the host (as ``name``, default: its own name).

    Use as ``@isoplug.method`` or ``@isoplug.method(name="other")``.
    """

    if isinstance(function, str):
        raise TypeError(
            f"isoplug.method() takes the exported name as a keyword: write "
            f"@isoplug.method(name={function!r}), not @isoplug.method({function!r})"
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"isoplug.method(name=...) needs a non-empty string, not {name!r}")

    def mark(target: F) -> F:
        function = _function_of(target)
        setattr(function, METHOD_MARK, name or function.__name__)
        return target

    return mark(function) if function is not None else mark


def _function_of(target: Any) -> Any:
    """The function a decorator marks: that of a ``staticmethod`` or ``classmethod`` decorated
    after it (``@isoplug.method`` above ``@staticmethod``), where the runner finds the mark
    when it looks the attribute up; a mark on the wrapper was lost, and the method silently
    not exported."""
    return target.__func__ if isinstance(target, (staticmethod, classmethod)) else target


def on_event(*events: str) -> Callable[[F], F]:
    """Subscribe a plugin method to the host's events named ``events``.

    The method is called with the event's payload as its one argument; ``async def``
    subscribers run on the loop, plain ones in a worker thread. Events reach one runner in
    the order the host published them.
    """
    if not events or not all(isinstance(e, str) and e for e in events):
        raise TypeError("on_event() needs one or more event names, e.g. @on_event('tick')")

    def mark(target: F) -> F:
        function = _function_of(target)
        setattr(function, EVENTS_MARK, (*getattr(function, EVENTS_MARK, ()), *events))
        return target

    return mark
