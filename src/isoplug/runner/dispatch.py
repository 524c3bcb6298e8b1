"""The loaded plugins of one runner, and routing calls and events to them.

:class:`LoadedPlugin` wraps one plugin instance with the methods and event subscriptions its
decorators declared. :class:`PluginTable` answers the host's calls: unknown plugin or method,
and arguments that do not fit the signature, become a :class:`~isoplug.control.CallOutcome`
carrying the code of :class:`~isoplug.errors.MethodNotFound` /
:class:`~isoplug.errors.InvalidParams`, so the host raises the right exception. Events wait
for each plugin in a bounded queue of its own (:mod:`isoplug.runner.events`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from isoplug.control import (
    MAX_OFFERED_NAME_CHARS,
    MAX_OFFERED_NAMES,
    CallOutcome,
    CallRequest,
    EventDelivery,
    PluginSummary,
)
from isoplug.errors import UnencodableValue
from isoplug.log_guard import guarded_logger
from isoplug.logs.sources import current_source
from isoplug.rpc.remote_errors import (
    EXIT_REQUESTS,
    exception_message,
    exit_request_text,
    qualified_name,
    traceback_text,
)
from isoplug.runner.api import EVENTS_MARK, METHOD_MARK, Plugin
from isoplug.runner.events import EventQueues
from isoplug.runner.forked_away import end_if_forked
from isoplug.runner.handler_failures import HandlerFailures
from isoplug.runner.loader import PluginLoadError
from isoplug.runner.methods import MethodInfo
from isoplug.runner.tracing import joined
from isoplug.runner.workers import WorkerPool, default_threads
from isoplug.wire import DEFAULT_MAX_FRAME_SIZE, ErrorInfo
from isoplug.wire.codec import ENCODE_ERRORS
from isoplug.wire.values import encode_more, locate_unencodable

__all__ = ["MAX_RESULT_BYTES", "LoadedPlugin", "PluginTable", "plugin_source"]

_log = guarded_logger("isoplug.runner")

#: Traceback text returned for a failed call; a deep recursion must not fill a frame.
_MAX_TRACEBACK_CHARS = 32 * 1024
#: A result's encoded size limit: a frame, less room for the answer around it.
MAX_RESULT_BYTES = DEFAULT_MAX_FRAME_SIZE - 4096
_UNENCODABLE = f"{UnencodableValue.__module__}.{UnencodableValue.__qualname__}"
_encoder = msgspec.msgpack.Encoder(enc_hook=encode_more)


def plugin_source(plugin_id: str) -> str:
    """The :data:`~isoplug.logs.sources.current_source` of a plugin's code: its logger's name,
    so that what it prints or fails with lands on ``plugin.<id>.stdout`` / ``plugin.<id>``."""
    return f"plugin.{plugin_id}"


#: The plugin's hooks, which only the runner calls.
_HOOKS = frozenset({"setup", "teardown", "on_config"})


class LoadedPlugin:
    """A plugin instance and what the host may do with it. Raises
    :class:`~isoplug.runner.loader.PluginLoadError` when its methods cannot all be exported."""

    def __init__(self, plugin_id: str, instance: Plugin) -> None:
        self.plugin_id = plugin_id
        self.instance = instance
        self.source = plugin_source(plugin_id)
        self.methods: dict[str, Callable[..., Any]] = {}
        #: The same methods, with what a call needs to know of them (see runner.methods).
        self.calls: dict[str, MethodInfo] = {}
        self.subscriptions: dict[str, list[Callable[..., Any]]] = {}
        #: Exported name -> the attribute and function that has it.
        exported: dict[str, tuple[str, object]] = {}
        for attribute in dir(type(instance)):
            function = getattr(type(instance), attribute, None)
            if function is None:
                continue
            bound = getattr(instance, attribute)
            name = getattr(function, METHOD_MARK, None)
            if isinstance(name, str):
                if name == "<lambda>":
                    # isoplug.method(lambda self: ...) assigned to a class attribute: the
                    # attribute's name is the only one it has.
                    name = attribute
                if attribute in _HOOKS:
                    raise PluginLoadError(
                        f"plugin {plugin_id!r}: {attribute}() is a hook the runner calls itself; "
                        "it cannot also be a method the host calls (remove @isoplug.method, or "
                        "export another method that calls it)"
                    )
                # The same function under two attributes (an alias) is one method.
                underlying = getattr(function, "__func__", function)
                other = exported.setdefault(name, (attribute, underlying))
                if other[1] is not underlying:
                    raise PluginLoadError(
                        f"plugin {plugin_id!r}: methods {other[0]!r} and {attribute!r} are both "
                        f"exported as {name!r}: the host could call only one of them; give "
                        "them different names (@isoplug.method(name=...))"
                    )
                self.methods[name] = bound
                self.calls[name] = MethodInfo(f"{plugin_id}.{name}", bound)
            events = getattr(function, EVENTS_MARK, ())
            if events:
                _check_handler(plugin_id, attribute, bound)
            for event in events:
                self.subscriptions.setdefault(event, []).append(bound)

    def summary(self) -> PluginSummary:
        return PluginSummary(
            methods=tuple(sorted(self.methods)),
            events=tuple(sorted(self.subscriptions)),
            unmarked=_unmarked(type(self.instance), self.methods)[:MAX_OFFERED_NAMES],
        )


def _check_handler(plugin_id: str, attribute: str, handler: Callable[..., Any]) -> None:
    """An event handler is called with the payload: one that cannot take it fails the load
    (not each event, with a TypeError from isoplug's frames)."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # a builtin: its call says
    try:
        signature.bind(None)
    except TypeError as exc:
        shown = signature.replace(return_annotation=inspect.Signature.empty)
        raise PluginLoadError(
            f"plugin {plugin_id!r}: event handler {attribute}{shown} cannot take the "
            f"event's payload ({exc}): declare it as def {attribute}(self, payload)"
        ) from None


def _unmarked(plugin_class: type, exported: Mapping[str, object]) -> tuple[str, ...]:
    """Public functions of ``plugin_class`` (not of :class:`~isoplug.Plugin`, not hooks) that
    are not exported methods."""
    names = []
    for attribute in dir(plugin_class):
        if attribute.startswith("_") or attribute in exported or attribute in _HOOKS:
            continue
        if hasattr(Plugin, attribute) or len(attribute) > MAX_OFFERED_NAME_CHARS:
            continue
        function = inspect.getattr_static(plugin_class, attribute, None)
        if isinstance(function, staticmethod | classmethod):
            function = function.__func__
        if inspect.isfunction(function) and not hasattr(function, METHOD_MARK):
            names.append(attribute)
    return tuple(names)


class PluginTable:
    """Every plugin of this runner, by id. A call's result must encode to at most
    ``max_result_bytes`` (what fits in a frame with the answer around it)."""

    def __init__(
        self, max_result_bytes: int = MAX_RESULT_BYTES, workers: WorkerPool | None = None
    ) -> None:
        self.plugins: dict[str, LoadedPlugin] = {}
        self.max_result_bytes = max_result_bytes
        #: Runs the sync methods and event handlers.
        self.workers = workers or WorkerPool(default_threads())
        #: The tasks of the calls being served (see cancel_calls).
        self._serving: set[asyncio.Task[Any]] = set()
        #: The events waiting for each plugin: ``events.offer`` takes the host's events.
        self.events = EventQueues(self.plugins, self.deliver_to)
        self.handler_failures = HandlerFailures()

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
        method = plugin.calls.get(request.method)
        if method is None:
            available = ", ".join(sorted(plugin.methods)) or "none"
            return _failure(
                "method_not_found",
                "isoplug.errors.MethodNotFound",
                f"plugin {plugin.plugin_id!r} has no method {request.method!r}; "
                f"available methods: {available}",
            )
        args = request.args
        kwargs = request.kwargs
        # The usual arguments (a few by position) surely fit: checked here, without a call.
        if not kwargs and method.least_positional <= len(args) <= method.most_positional:
            mismatch = None
        else:
            mismatch = method.bind_error(args, kwargs)
        if mismatch is not None:
            return _failure(
                "invalid_params",
                "isoplug.errors.InvalidParams",
                f"arguments do not fit {method.name}{method.signature}: {mismatch}"
                + _timeout_hint(request, method.signature),
            )
        # The call's output is the plugin's, in its tasks and worker thread too (the pool
        # copies the context, as to_thread does). The request runs in a task of its own: the
        # value is reset below only for tidiness.
        source = current_source.set(plugin.source)
        task = asyncio.current_task()
        serving = self._serving
        if task is not None:
            serving.add(task)
        try:
            traceparent = request.traceparent
            if not traceparent and method.is_async:
                # The common case, without a context manager or a coroutine between the task
                # and the method (and, without keyword arguments, no copy of their dict).
                function = method.function
                result = await (function(*args, **kwargs) if kwargs else function(*args))
            else:
                with joined(traceparent, request.tracestate):
                    if method.is_async:
                        result = await method.function(*args, **kwargs)
                    else:
                        result = await self.workers.run(
                            request.call_id,
                            method.name,
                            functools.partial(method.function, *args, **kwargs),
                        )
        except Exception as exc:
            end_if_forked(method.name, exc)
            return _error(exc, exception_message(exc))
        except EXIT_REQUESTS as exc:
            end_if_forked(method.name, exc)
            # Let through, it ended the runner (a task's SystemExit stops the loop): every
            # other call failed, teardown was skipped, the crash counted towards the restart
            # limit. It fails this call only, as any exception. Cancellation (GeneratorExit,
            # CancelledError) is not one of them: it goes on up.
            return _error(
                exc,
                f"{method.name} raised {exit_request_text(exc)}; a plugin method cannot end "
                "its runner: the runner kept running (raise an exception to fail a call)",
            )
        finally:
            serving.discard(task)
            current_source.reset(source)
        end_if_forked(method.name, None)
        return self._outcome(method.name, result)

    def cancel_calls(self) -> list[asyncio.Task[Any]]:
        """Cancel every call being served and every event handler running (the events still
        queued are dropped, and said); return their tasks (to await). At shutdown, before the
        teardown hooks and the end of log forwarding, so that what a method logs as it is
        cancelled still reaches the host as its record."""
        tasks: list[asyncio.Task[Any]] = list(self._serving)
        for task in tasks:
            # What the host is told, should it still be waiting for the answer.
            task.cancel("the runner is shutting down")
        tasks.extend(self.events.stop())
        self.handler_failures.close()
        return tasks

    def _outcome(self, name: str, result: Any) -> CallOutcome:
        """``result`` encoded here, where the plugin's method can still be named: the answer's
        own encoding could only say that some ``CallOutcome`` did not encode."""
        try:
            encoded = _encoder.encode(result)
        except ENCODE_ERRORS:
            where = locate_unencodable(result, "result") or "it does not encode"
            return _failure(
                "error",
                _UNENCODABLE,
                f"{name} returned a value that cannot be sent to the host: {where}; return "
                "plain data (the README says what crosses between host and plugin)",
            )
        if len(encoded) > self.max_result_bytes:
            return _failure(
                "error",
                _UNENCODABLE,
                f"{name} returned {len(encoded):,} bytes once encoded; a result may take at "
                f"most {self.max_result_bytes:,}: return less, or where to find it",
            )
        return CallOutcome(result=msgspec.Raw(encoded))

    async def deliver(self, delivery: EventDelivery) -> None:
        """Hand an event to every subscriber, one after another; failures are logged."""
        for plugin in self.plugins.values():
            await self.deliver_to(plugin, delivery)

    async def deliver_to(self, plugin: LoadedPlugin, delivery: EventDelivery) -> None:
        """Hand an event to each of ``plugin``'s subscribers, in turn; failures are logged."""
        for subscriber in plugin.subscriptions.get(delivery.event, ()):
            source = current_source.set(plugin.source)
            try:
                with joined(delivery.traceparent, delivery.tracestate):
                    if inspect.iscoroutinefunction(subscriber):
                        await subscriber(delivery.payload)
                    else:
                        name = f"{plugin.plugin_id}.{subscriber.__name__}"
                        await self.workers.run(
                            0,
                            f"{name} (event {delivery.event!r})",
                            functools.partial(subscriber, delivery.payload),
                        )
            except (Exception, *EXIT_REQUESTS) as exc:
                self.handler_failures.failed(
                    plugin.plugin_id, plugin.source, subscriber.__name__, delivery.event, exc
                )
            finally:
                current_source.reset(source)


def _timeout_hint(request: CallRequest, signature: inspect.Signature | None) -> str:
    """Callers of old passed isoplug's call timeout as ``timeout=``, which now goes to the
    method like any argument: say where the timeout went, when that is why the call failed."""
    if signature is None or "timeout" not in request.kwargs or "timeout" in signature.parameters:
        return ""
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return ""
    return (
        "; every argument of host.call() goes to the method: to limit how long the call may "
        "take, use host.call_with(..., timeout=...)"
    )


def _failure(code: str, type_name: str, message: str, traceback_text: str = "") -> CallOutcome:
    return CallOutcome(
        error=ErrorInfo(code=code, type=type_name, message=message, traceback=traceback_text)
    )


def _error(exc: BaseException, message: str) -> CallOutcome:
    """The answer to a call whose method raised ``exc``: its type, ``message`` and traceback,
    each capped (a 20 MB message made an answer too large to send), whatever ``exc`` does."""
    return _failure(
        "error",
        qualified_name(type(exc)),
        message,
        traceback_text(exc, _MAX_TRACEBACK_CHARS),
    )
