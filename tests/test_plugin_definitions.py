"""Plugin classes written in ways the API did not expect, with real runners: two methods under
one name, methods that are static or class methods, plain ``def`` hooks; and a host's
``on_change`` that is a coroutine function."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

import isoplug
from isoplug import Host, PluginState
from isoplug.host.on_change import call_on_change
from isoplug.runner.dispatch import LoadedPlugin
from isoplug.runner.loader import PluginLoadError
from tests.plugins_fixtures import FAST
from tests.record_waiter import watching


def write_plugin(plugins: Path, plugin_id: str, body: str, *, group: str | None = None) -> None:
    folder = plugins / plugin_id
    folder.mkdir(parents=True)
    (folder / f"{plugin_id}_plugin.py").write_text(
        "import isoplug\n\n\nclass P(isoplug.Plugin):\n" + textwrap.indent(body, "    ")
    )
    member = f'group = "{group}"\n' if group is not None else ""
    (folder / "plugin.toml").write_text(
        f'id = "{plugin_id}"\nversion = "1"\nentry = "{plugin_id}_plugin:P"\n{member}'
        '[restart]\npolicy = "never"\n'
    )


DUPLICATE = """
@isoplug.method(name="hi")
async def first(self):
    return "first"

@isoplug.method(name="hi")
async def second(self):
    return "second"
"""

STATIC = """
@isoplug.method
@staticmethod
def twice(x):
    return 2 * x

@isoplug.method
@classmethod
async def named(cls, x):
    return f"{cls.__name__} {x}"

@isoplug.on_event("tick")
@staticmethod
def on_tick(payload):
    import logging
    logging.getLogger("plugin.static").warning("static handler got %s", payload)
"""

SYNC_HOOKS = """
def setup(self, ctx):
    self.ctx = ctx
    self.greeting = "set up"

def teardown(self):
    self.ctx.logger.warning("plain teardown ran")

@isoplug.method
async def hi(self):
    return self.greeting
"""


async def test_two_methods_under_one_name_fail_the_load_naming_both(tmp_path: Path) -> None:
    """The second used to win silently; now the plugin fails to load, naming both methods."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "dup", DUPLICATE)
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20, raise_on_failure=False)
        info = host.plugin("dup")
        assert info.state is PluginState.FAILED
        assert info.error is not None
        assert "methods 'first' and 'second' are both exported as 'hi'" in info.error


async def test_static_and_class_methods_are_exported(tmp_path: Path) -> None:
    """@isoplug.method above @staticmethod / @classmethod used to be silently not exported;
    so was such an event handler."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "static", STATIC)
    with watching("plugin") as records:
        async with Host(plugins, config=FAST) as host:
            await host.wait_ready(20)
            assert host.plugin("static").methods == ("named", "twice")
            assert await host.call("static", "twice", 21) == 42
            assert await host.call("static", "named", "x") == "P x"
            await host.publish("tick", 7)
            await records.wait_for_record(text="static handler got 7")


async def test_setup_and_teardown_may_be_plain_functions(tmp_path: Path) -> None:
    """A plain def setup failed with "object NoneType can't be used in 'await' expression";
    now it runs, as does a plain def teardown."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "plain", SYNC_HOOKS)
    with watching("plugin") as records:
        async with Host(plugins, config=FAST) as host:
            await host.wait_ready(20)
            assert await host.call("plain", "hi") == "set up"
        await records.wait_for_record(level=logging.WARNING, text="plain teardown ran")


async def test_sys_exit_in_setup_is_a_setup_failure(tmp_path: Path) -> None:
    """It ended the runner with its exit code; now it is reported as setup()'s failure."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "quits", "async def setup(self, ctx):\n    raise SystemExit(4)\n")
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20, raise_on_failure=False)
        info = host.plugin("quits")
        assert info.state is PluginState.FAILED
        assert info.error is not None and "setup() raised SystemExit: 4" in info.error


# -- sans-IO: the same rules on a class in this process ------------------------------------------


class Aliased(isoplug.Plugin):
    @isoplug.method
    async def real(self) -> str:
        return "real"

    alias = real  # one function under two attributes: one method


class Clash(isoplug.Plugin):
    @isoplug.method
    async def hi(self) -> str:
        return "hi"

    @isoplug.method(name="hi")
    def other(self) -> str:
        return "other"


def test_an_alias_is_one_method_and_a_clash_is_an_error() -> None:
    assert LoadedPlugin("aliased", Aliased()).summary().methods == ("real",)
    with pytest.raises(PluginLoadError, match="methods 'hi' and 'other' are both exported as 'hi'"):
        LoadedPlugin("clash", Clash())


class Lambda(isoplug.Plugin):
    hi_twice = isoplug.method(lambda self: "hi hi")


class HookAsMethod(isoplug.Plugin):
    @isoplug.method
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        """A hook the host could then call, with the runner's arguments or none."""


def test_a_lambda_method_is_exported_under_its_attribute_and_a_hook_is_refused() -> None:
    """A lambda has no name of its own (it was exported as '<lambda>'); a hook marked as a
    method was exported for the host to call."""
    assert LoadedPlugin("lambda", Lambda()).summary().methods == ("hi_twice",)
    with pytest.raises(PluginLoadError, match=r"setup\(\) is a hook the runner calls itself"):
        LoadedPlugin("hook", HookAsMethod())


def test_an_empty_method_name_is_refused_where_it_is_written() -> None:
    """name="" used to fall back to the function's name, silently."""
    with pytest.raises(TypeError, match="needs a non-empty string, not ''"):
        isoplug.method(name="")


def test_a_method_name_given_positionally_says_to_write_name() -> None:
    """``@isoplug.method("digest")``, as ``@on_event("tick")`` is written, failed with an
    AttributeError about ``str``."""
    with pytest.raises(TypeError, match=r"write @isoplug.method\(name='digest'\)"):
        isoplug.method("digest")  # type: ignore[call-overload]


# -- the host's on_change -----------------------------------------------------------------------


async def _async_observer(change: Any) -> None:
    """Never awaited, when it was accepted."""


class _AsyncCall:
    async def __call__(self, change: Any) -> None:
        """The same, as an object."""


def test_a_coroutine_returned_by_on_change_is_closed_and_logged() -> None:
    """What the check at Host() cannot see (a plain function returning a coroutine) is not
    left to Python's "never awaited" warning."""
    coroutines: list[Any] = []

    def observer(change: Any) -> Any:
        coroutines.append(_async_observer(change))
        return coroutines[-1]

    with watching("isoplug.host") as records:
        call_on_change(observer, None)  # type: ignore[arg-type]
    assert coroutines[0].cr_frame is None  # closed
    [record] = records.records
    assert record.levelno == logging.ERROR
    assert "which is never awaited: on_change must be a plain function" in record.getMessage()


@pytest.mark.parametrize("observer", [_async_observer, _AsyncCall(), 42])
def test_on_change_must_be_a_plain_function(tmp_path: Path, observer: Any) -> None:
    """An async def on_change was called and its coroutine dropped (a RuntimeWarning only):
    a TypeError when the host is made says how to run a coroutine instead."""
    plain = r"on_change must be a plain function.*asyncio\.create_task"
    with pytest.raises(TypeError, match=plain):
        Host(tmp_path, on_change=observer)
