"""The fast call path: argument checks made once per method, the worker pool's hand-off, and
runners on either event loop (uvloop when installed, asyncio on request)."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import logging
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from isoplug import Host
from isoplug.errors import InvalidParams, RemoteError
from isoplug.runner import eventloop
from isoplug.runner.methods import ArgumentCheck, MethodInfo
from isoplug.runner.workers import WorkerPool, WorkerThread
from isoplug.testing import eventually
from tests.plugins_fixtures import FAST

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None

# -- the argument check agrees with Signature.bind ---------------------------------------------


def f_plain(a: Any, b: Any = 1) -> None: ...
def f_keyword_only(a: Any, *, k: Any, m: Any = 2) -> None: ...
def f_positional_only(a: Any, /, b: Any) -> None: ...
def f_var(a: Any, *args: Any, **kwargs: Any) -> None: ...
def f_var_keywords_over_positional_only(a: Any, /, **kwargs: Any) -> None: ...
def f_nothing() -> None: ...
def f_everything(
    a: Any, /, b: Any, c: Any = 3, *args: Any, d: Any, e: Any = 5, **kw: Any
) -> None: ...


FUNCTIONS = [
    f_plain,
    f_keyword_only,
    f_positional_only,
    f_var,
    f_var_keywords_over_positional_only,
    f_nothing,
    f_everything,
]
CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    ((1,), {}),
    ((1, 2), {}),
    ((1, 2, 3), {}),
    ((1, 2, 3, 4, 5), {}),
    ((), {"a": 1}),
    ((), {"a": 1, "b": 2}),
    ((1,), {"a": 1}),
    ((1,), {"b": 2}),
    ((1,), {"k": 1}),
    ((1,), {"k": 1, "m": 2, "x": 3}),
    ((1, 2), {"d": 4}),
    ((1, 2), {"b": 2, "d": 4}),
    ((1,), {"b": 2, "d": 4, "a": 9}),
    ((), {"b": 2, "d": 4}),
    ((1,), {"unknown": 1}),
]


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.__name__)
def test_the_quick_argument_check_agrees_with_signature_bind(function: Callable[..., Any]) -> None:
    """Where the quick check says yes, bind() accepts; MethodInfo reports exactly bind()'s
    errors, with bind()'s message (and, after a missing argument, the keywords the method has
    no parameter for: a misspelled one)."""
    signature = inspect.signature(function)
    check = ArgumentCheck(signature)
    method = MethodInfo(f"p.{function.__name__}", function)
    for args, kwargs in CALLS:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            expected: str | None = str(exc)
        else:
            expected = None
        if check.fits(args, kwargs):
            assert expected is None, (args, kwargs, expected)
        if not kwargs:
            # The range checked inline for calls by position says what fits() says.
            in_range = check.least_positional <= len(args) <= check.most_positional
            assert in_range == check.fits(args, kwargs), (args, check.least_positional)
        error = method.bind_error(args, kwargs)
        said = None if error is None else str(error)
        if said is not None and expected is not None and expected.startswith("missing"):
            said = said.split("; unexpected keyword argument(s) ")[0]
        assert said == expected, (args, kwargs)


def test_a_method_without_a_signature_is_left_to_check_its_arguments() -> None:
    """Some C callables have no signature Python can tell: the call goes ahead."""
    method = MethodInfo("p.builtin", dict)  # inspect.signature(dict) raises ValueError
    assert method.signature is None
    assert method.bind_error((1, 2, 3), {"anything": 1}) is None


# -- a restarted runner loads the plugin's methods afresh --------------------------------------

PLUGIN = """
import isoplug


class Greeter(isoplug.Plugin):
    @isoplug.method
    async def greet(self, {parameters}) -> str:
        return "hello " + name + ("!" if {loud} else "")

    @isoplug.method
    def greet_sync(self, {parameters}) -> str:
        return "hello " + name + ("!" if {loud} else "")
"""


def write_greeter(directory: Path, parameters: str, loud: str) -> None:
    plugin = directory / "greeter"
    plugin.mkdir(parents=True, exist_ok=True)
    (plugin / "plugin.toml").write_text(
        'id = "greeter"\nversion = "1"\nentry = "greeter:Greeter"\n'
    )
    (plugin / "greeter.py").write_text(PLUGIN.format(parameters=parameters, loud=loud))


async def test_a_restarted_plugin_is_called_with_its_new_signature(tmp_path: Path) -> None:
    """The argument check belongs to the code the runner loaded: after the plugin's code
    changed and it was restarted, calls are checked against the new signature."""
    plugins = tmp_path / "plugins"
    write_greeter(plugins, "name: str", "False")
    async with Host(plugins, config=FAST) as host:
        await host.wait_ready(20)
        for method in ("greet", "greet_sync"):
            assert await host.call("greeter", method, name="Ada") == "hello Ada"
            with pytest.raises(InvalidParams, match="unexpected keyword argument 'loud'"):
                await host.call("greeter", method, name="Ada", loud=True)
        write_greeter(plugins, "name: str, *, loud: bool", "loud")
        await host.restart("greeter")
        for method in ("greet", "greet_sync"):
            assert await host.call("greeter", method, name="Ada", loud=True) == "hello Ada!"
            with pytest.raises(InvalidParams, match=r"greeter\.\w+\(name: str, \*, loud: bool\)"):
                await host.call("greeter", method, name="Ada")


# -- the worker pool ---------------------------------------------------------------------------


async def test_the_pool_runs_in_threads_in_the_callers_context_and_returns_errors() -> None:
    pool = WorkerPool(2)
    variable: Any = __import__("contextvars").ContextVar("v", default="unset")
    variable.set("caller's")
    assert await pool.run(1, "t.where", lambda: threading.current_thread().name) != (
        threading.current_thread().name
    )
    assert await pool.run(2, "t.context", variable.get) == "caller's"
    with pytest.raises(LookupError, match="from the thread"):
        await pool.run(3, "t.fail", lambda: (_ for _ in ()).throw(LookupError("from the thread")))
    assert pool.snapshot() == []
    pool.shutdown()


async def test_the_pools_threads_are_no_daemons_and_end_at_its_shutdown() -> None:
    """A thread started in a call is no daemon, as in any program (its flag is its starter's);
    shutdown() ends the idle threads (the interpreter joins them at exit) and refuses later
    calls."""
    pool = WorkerPool(2)

    def starts_a_thread() -> bool:
        return threading.Thread(target=lambda: None).daemon

    assert await pool.run(1, "t.daemon", starts_a_thread) is False
    threads = [t for t in threading.enumerate() if isinstance(t, WorkerThread) and t.pool is pool]
    assert threads and not any(t.daemon for t in threads)
    assert not pool.busy()
    pool.shutdown()
    await eventually(lambda: not any(t.is_alive() for t in threads))
    with pytest.raises(RuntimeError, match="shutting down"):
        await pool.run(2, "t.late", lambda: None)


async def test_a_call_cancelled_while_queued_never_runs_and_one_cancelled_running_runs_on() -> None:
    """The health thread's view: an abandoned call is listed until its thread returns; one
    cancelled before a thread took it is gone at once and never runs."""
    pool = WorkerPool(1)
    release = threading.Event()
    ran: list[str] = []

    def block() -> str:
        ran.append("blocker")
        release.wait(30)
        return "late"

    running = asyncio.ensure_future(pool.run(1, "t.block", block))
    queued = asyncio.ensure_future(pool.run(2, "t.queued", lambda: ran.append("queued")))
    await eventually(lambda: bool(ran))
    running.cancel()
    queued.cancel()
    await asyncio.gather(running, queued, return_exceptions=True)
    [stuck] = pool.snapshot()
    assert stuck.what == "t.block" and stuck.abandoned and stuck.started
    assert pool.busy()
    release.set()
    await eventually(lambda: not pool.snapshot())
    # The pool's one thread is free again, and the cancelled call was skipped.
    assert await pool.run(3, "t.after", lambda: "after") == "after"
    assert ran == ["blocker"]
    pool.shutdown()


# -- the event loop ------------------------------------------------------------------------------


def test_the_loop_choice_and_its_fallbacks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert eventloop.loop_factory("asyncio") is asyncio.new_event_loop
    expected = "uvloop" if HAVE_UVLOOP else "asyncio"
    for choice in ("auto", "", " Auto "):
        loop = eventloop.loop_factory(choice)()
        try:
            assert eventloop.loop_name(loop) == expected
        finally:
            loop.close()
    with caplog.at_level(logging.WARNING, "isoplug.runner"):
        assert eventloop.loop_factory("tokio") is asyncio.new_event_loop
    assert "is not one of auto, asyncio, uvloop" in caplog.text
    caplog.clear()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    with caplog.at_level(logging.WARNING, "isoplug.runner"):
        assert eventloop.loop_factory("uvloop") is asyncio.new_event_loop
        assert eventloop.loop_factory("auto") is asyncio.new_event_loop
    assert caplog.text.count("uvloop cannot be imported") == 1  # auto says nothing
    monkeypatch.setenv(eventloop.EVENT_LOOP_VARIABLE, "asyncio")
    assert eventloop.run(_loop_of_this()) == "asyncio"


async def _loop_of_this() -> str:
    return eventloop.loop_name(asyncio.get_running_loop())


LOOPY = """
import asyncio

import isoplug
from isoplug.runner.eventloop import loop_name


class Loopy(isoplug.Plugin):
    async def setup(self, ctx: isoplug.PluginContext) -> None:
        self.ctx = ctx

    @isoplug.method
    async def loop(self) -> str:
        return loop_name(asyncio.get_running_loop())

    @isoplug.method
    def double(self, value: int) -> int:
        return 2 * value

    @isoplug.method
    async def fail(self) -> None:
        raise KeyError("deliberately")

    @isoplug.method
    async def slow(self) -> None:
        await asyncio.sleep(30)

    @isoplug.method
    async def ask_host(self, value: int) -> int:
        return await self.ctx.call_host("test.inc", value=value)
"""


@pytest.mark.parametrize(
    "choice",
    [
        "asyncio",
        pytest.param(
            "uvloop", marks=pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop not installed")
        ),
    ],
)
async def test_runners_serve_calls_on_the_loop_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    """Everything a call can do works on either loop: async and sync methods, a remote error
    with its traceback, a timeout (with the runner's word on it), a capability call back to
    the host, and many calls at once."""
    monkeypatch.setenv(eventloop.EVENT_LOOP_VARIABLE, choice)
    plugin = tmp_path / "plugins" / "loopy"
    plugin.mkdir(parents=True)
    (plugin / "plugin.toml").write_text(
        'id = "loopy"\nversion = "1"\nentry = "loopy:Loopy"\ncapabilities = ["test.inc"]\n'
    )
    (plugin / "loopy.py").write_text(textwrap.dedent(LOOPY))
    async with Host(tmp_path / "plugins", config=FAST) as host:
        host.register_capability("test.inc", lambda value: value + 1)
        await host.wait_ready(20)
        assert await host.call("loopy", "loop") == choice
        assert await host.call("loopy", "double", 21) == 42
        with pytest.raises(RemoteError, match="deliberately") as failed:
            await host.call("loopy", "fail")
        assert failed.value.remote_type == "builtins.KeyError"
        assert 'raise KeyError("deliberately")' in failed.value.remote_traceback
        with pytest.raises(TimeoutError, match="cancelled"):
            await host.call_with("loopy", "slow", timeout=0.2)
        assert await host.call("loopy", "ask_host", value=1) == 2
        results = await asyncio.gather(*(host.call("loopy", "double", i) for i in range(500)))
        assert results == [2 * i for i in range(500)]
