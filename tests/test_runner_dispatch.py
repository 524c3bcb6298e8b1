"""Routing the host's calls and events to plugin methods, inside a runner."""

from __future__ import annotations

import threading
from typing import Any

import msgspec
import pytest

import isoplug
from isoplug.control import CallRequest, EventDelivery
from isoplug.runner.dispatch import LoadedPlugin, PluginTable
from isoplug.runner.loader import PluginLoadError


class Sample(isoplug.Plugin):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    @isoplug.method
    async def greet(self, name: str, punctuation: str = "!") -> str:
        return f"hello {name}{punctuation}"

    @isoplug.method(name="where")
    def which_thread(self) -> str:
        return threading.current_thread().name

    @isoplug.method
    async def broken(self) -> None:
        raise LookupError("nothing here")

    async def not_exposed(self) -> None:
        """Not decorated: the host cannot call it."""

    @isoplug.on_event("a", "b")
    def record(self, payload: Any) -> None:
        self.seen.append(payload)


def table() -> tuple[PluginTable, Sample]:
    plugin = Sample()
    plugins = PluginTable()
    plugins.add(LoadedPlugin("sample", plugin))
    return plugins, plugin


def test_decorators_declare_methods_and_subscriptions() -> None:
    """@method (optionally renamed) and @on_event are what the host sees; nothing else."""
    summary = LoadedPlugin("sample", Sample()).summary()
    assert summary.methods == ("broken", "greet", "where")
    assert summary.events == ("a", "b")
    # Public functions not marked (a forgotten @isoplug.method): a call of one says so.
    assert summary.unmarked == ("not_exposed", "record")


async def test_async_methods_run_on_the_loop_and_sync_ones_in_a_worker_thread() -> None:
    """Keyword arguments reach the method; a plain def does not run on the loop's thread."""
    plugins, _ = table()
    outcome = await plugins.call(CallRequest("sample", "greet", {"name": "Ada"}))
    assert outcome.error is None and msgspec.msgpack.decode(outcome.result) == "hello Ada!"
    outcome = await plugins.call(CallRequest("sample", "where"))
    assert msgspec.msgpack.decode(outcome.result) != threading.current_thread().name


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            CallRequest("sample", "nope"),
            "method_not_found",
            "plugin 'sample' has no method 'nope'; available methods: broken, greet, where",
        ),
        (CallRequest("other", "greet"), "method_not_found", "runner has no plugin 'other'"),
        (
            CallRequest("sample", "greet", {}),
            "invalid_params",
            "missing a required argument: 'name'",
        ),
        (
            CallRequest("sample", "greet", {"name": "x", "colour": 1}),
            "invalid_params",
            "unexpected keyword argument 'colour'",
        ),
        (CallRequest("sample", "not_exposed"), "method_not_found", "no method 'not_exposed'"),
    ],
)
async def test_calls_that_cannot_be_made_say_why(
    request_: CallRequest, code: str, message: str
) -> None:
    """Unknown plugin or method, or arguments that do not fit: a coded, explained failure."""
    plugins, _ = table()
    outcome = await plugins.call(request_)
    assert outcome.error is not None
    assert outcome.error.code == code
    assert message in outcome.error.message


async def test_an_exception_in_a_method_is_returned_with_its_traceback() -> None:
    """The method's exception type, message and traceback travel back to the host."""
    plugins, _ = table()
    outcome = await plugins.call(CallRequest("sample", "broken"))
    assert outcome.error is not None
    assert (outcome.error.code, outcome.error.type) == ("error", "builtins.LookupError")
    assert outcome.error.message == "nothing here"
    assert "in broken" in outcome.error.traceback


async def test_events_reach_every_subscriber_in_order() -> None:
    """An event subscribed under two names is delivered for each, in order."""
    plugins, plugin = table()
    for event, payload in (("a", 1), ("c", 2), ("b", 3)):
        await plugins.deliver(EventDelivery(event, payload))
    assert plugin.seen == [1, 3]


def test_on_event_needs_a_name() -> None:
    """@on_event() without a name is a mistake caught at class definition."""
    with pytest.raises(TypeError, match="needs one or more event names"):
        isoplug.on_event()


def test_an_event_handler_that_cannot_take_the_payload_fails_the_load() -> None:
    """Caught when the plugin loads, saying how to declare it; not at each event, with a
    TypeError from isoplug's frames."""

    class Forgetful(isoplug.Plugin):
        @isoplug.on_event("reset")
        async def on_reset(self) -> None: ...

    class Fine(isoplug.Plugin):
        @isoplug.on_event("reset")
        async def on_reset(self, payload: Any, extra: int = 0) -> None: ...

    with pytest.raises(
        PluginLoadError,
        match=r"event handler on_reset\(\) cannot take the event's payload \(too many positional "
        r"arguments\): declare it as def on_reset\(self, payload\)",
    ):
        LoadedPlugin("forgetful", Forgetful())
    assert LoadedPlugin("fine", Fine()).summary().events == ("reset",)
