"""What a test does to its plugin through a harness beyond calls: stop it (and see its
teardown's records), restart it, configure it, set its log level, call it with a timeout; the
blocking harness as the async one, with the same signatures; the host of a blocking harness,
used from another loop, naming the harness's methods; and a harness's configuration of its
plugins, which keeps the fast test timings. Real runners under a real host throughout."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from pathlib import Path
from typing import Any

import pytest

from isoplug import Host, PluginState, SupervisorConfig
from isoplug.errors import ConfigInvalid, RequestTimeout
from isoplug.testing import FAST, BlockingHarness, PluginHarness
from tests.greeter_plugin import write_greeter

#: The harness methods a synchronous test has as an async one has them.
SHARED_METHODS = (
    "plugin_ids",
    "info",
    "call",
    "call_in",
    "call_with",
    "publish",
    "crash",
    "stop",
    "restart",
    "set_config",
    "set_log_level",
    "wait_for",
    "wait_for_record",
)


def test_a_sync_test_stops_restarts_configures_and_calls_with_a_timeout(
    tmp_path: Path, isoplug_host: object
) -> None:
    plugin: BlockingHarness = isoplug_host(write_greeter(tmp_path))  # type: ignore[operator]
    assert plugin.call_with("greet", kwargs={"name": "Ada"}, timeout=30) == "Hello, Ada!"
    with pytest.raises(RequestTimeout):
        plugin.call_with("never", timeout=0.2)
    with pytest.raises(TimeoutError):  # run() cancels what it ran, past its timeout
        plugin.run(plugin.host.call("greeter", "never"), timeout=0.2)

    assert plugin.set_config({"greeting": "Yo"}) is False  # no on_config: restarted with it
    assert plugin.call("greet", name="Bo") == "Yo, Bo!"
    plugin.call("greet", name="Bo")

    stopped = plugin.stop()
    assert stopped.state is PluginState.STOPPED
    # stop() returns once the teardown's records are in.
    assert plugin.records.select(plugin="greeter", text="teardown ran after 2 greeting(s)")

    assert plugin.restart().state is PluginState.READY
    assert plugin.call("greet", name="Cy") == "Yo, Cy!"  # the configuration holds
    plugin.wait_for_record(plugin="greeter", level="INFO", text="greeting Cy #1")
    assert not plugin.records.select(plugin="greeter", text="so far")  # INFO by default
    plugin.set_log_level("DEBUG")
    plugin.call("greet", name="Di")
    debug = plugin.wait_for_record(plugin="greeter", text="so far")
    assert (debug.levelno, debug.getMessage()) == (logging.DEBUG, "greeted 2 so far")
    assert plugin.run(plugin.host.wait_ready(30))[0].state is PluginState.READY


async def test_an_async_test_has_the_same_operations(tmp_path: Path) -> None:
    async with PluginHarness(write_greeter(tmp_path)) as plugin:
        assert await plugin.set_config({"greeting": "Hi"}, plugin="greeter") is False
        await plugin.set_log_level(logging.DEBUG)
        assert await plugin.call_with("greet", args=["Ada"], timeout=None) == "Hi, Ada!"
        assert (await plugin.stop()).state is PluginState.STOPPED
        assert plugin.records.select(plugin="greeter", level="DEBUG", text="greeted 1 so far")
        assert plugin.records.select(plugin="greeter", text="teardown ran after 1 greeting(s)")
        assert (await plugin.restart("greeter")).state is PluginState.READY


def test_both_harnesses_have_the_same_methods_with_the_same_signatures() -> None:
    for name in SHARED_METHODS:
        blocking, harness = getattr(BlockingHarness, name), getattr(PluginHarness, name)
        assert inspect.signature(blocking) == inspect.signature(harness), name


def test_the_host_of_a_sync_test_used_from_another_loop_names_the_harness_methods(
    tmp_path: Path, isoplug_host: object
) -> None:
    plugin: BlockingHarness = isoplug_host(write_greeter(tmp_path))  # type: ignore[operator]
    with pytest.raises(
        RuntimeError, match=r"cannot stop plugin 'greeter': .*BlockingHarness"
    ) as out:
        asyncio.run(plugin.host.stop("greeter"))
    assert "harness.stop()" in str(out.value) and "harness.run(" in str(out.value)
    assert "run_coroutine_threadsafe" not in str(out.value)
    assert plugin.info().state is PluginState.READY  # nothing was done


@pytest.mark.parametrize("form", ["plugin_config", "config"])
def test_a_harness_configures_its_plugin_and_keeps_the_fast_timings(
    tmp_path: Path, isoplug_host: object, form: str
) -> None:
    """``plugin_config=``, as Host takes it; and ``config={id: table}``, Host's other form."""
    plugin: BlockingHarness = isoplug_host(  # type: ignore[operator]
        write_greeter(tmp_path), **{form: {"greeter": {"greeting": "Yo"}}}
    )
    assert plugin.call("greet", name="Ada") == "Yo, Ada!"
    assert plugin.host.config == FAST


async def test_an_async_harness_takes_plugin_config_too(tmp_path: Path) -> None:
    config = {"greeter": {"greeting": "Yo"}}
    async with PluginHarness(write_greeter(tmp_path), plugin_config=config) as plugin:
        assert await plugin.call("greet", name="Ada") == "Yo, Ada!"
        assert plugin.host.config == FAST


def test_a_supervisor_config_given_to_a_harness_is_the_hosts_whole(
    tmp_path: Path, isoplug_host: object
) -> None:
    """As documented: it replaces FAST; dataclasses.replace(FAST, ...) keeps the rest fast."""
    slower = dataclasses.replace(FAST, call_timeout=60.0)
    plugin: BlockingHarness = isoplug_host(write_greeter(tmp_path), config=slower)  # type: ignore[operator]
    assert plugin.host.config == slower


def test_a_harness_refuses_a_configuration_it_would_misread(tmp_path: Path) -> None:
    folder = write_greeter(tmp_path)
    with pytest.raises(
        TypeError, match=r"BlockingHarness\(\): give the plugins' configuration once"
    ):
        BlockingHarness(folder, config={"greeter": {}}, plugin_config={"greeter": {}})
    with pytest.raises(
        TypeError,
        match=r"'call_timeout' is a setting .* config=dataclasses\.replace\(FAST, call_timeout=5\)",
    ):
        BlockingHarness(folder, config={"call_timeout": 5})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"PluginHarness\(config=\.\.\.\)"):
        PluginHarness(folder, config={"health_timeout": 1.0})  # type: ignore[dict-item]
    assert SupervisorConfig().call_timeout != FAST.call_timeout  # what replacing FAST loses


async def test_a_harness_configuring_a_plugin_it_does_not_run_fails_the_start(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"plugin_config names plugin.* not found: greeterr; the"):
        async with PluginHarness(write_greeter(tmp_path), plugin_config={"greeterr": {}}):
            pass


@pytest.mark.parametrize("maker", [Host, PluginHarness, BlockingHarness])
@pytest.mark.parametrize(
    ("options", "error", "said"),
    [
        ({"config": "fast"}, TypeError, r"\(config=\.\.\.\) must be a SupervisorConfig .* str"),
        ({"plugin_config": [1]}, TypeError, r"\(plugin_config=\.\.\.\) must be a mapping .* list"),
        ({"plugin_config": {1: {}}}, TypeError, r"its keys are plugin ids \(strings\).* int 1"),
        ({"plugin_config": {"greeter": [1]}}, ConfigInvalid, r"'greeter': .* must be a table"),
        ({"config": {"greeter": "Yo"}}, ConfigInvalid, r"'greeter': .* must be a table"),
    ],
)
def test_host_and_harnesses_check_their_configuration_options_where_made(
    tmp_path: Path, maker: type[Any], options: dict[str, Any], error: type[Exception], said: str
) -> None:
    """Made, not entered: a harness given config="fast" ran with FAST unsaid, and one given
    plugin_config=[1] (as Host given either) raised a raw AttributeError only once it ran."""
    with pytest.raises(error, match=said) as caught:
        maker(write_greeter(tmp_path), **options)
    if error is TypeError:  # names what the test wrote
        assert str(caught.value).startswith(f"{maker.__name__}(")
