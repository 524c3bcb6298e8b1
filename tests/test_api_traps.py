"""The host's API as a user meets it, with real runners: arguments (no reserved name,
positional ones), ``wait_ready()`` when plugins fail, and values that cannot cross."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import enum
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from isoplug import (
    Host,
    PluginFailed,
    PluginInfo,
    PluginNotReady,
    PluginState,
    PluginUnavailable,
    SupervisorConfig,
    Unavailability,
    UnencodableValue,
)
from isoplug.control import CapabilityRequest
from isoplug.errors import (
    InvalidParams,
    LocalProtocolError,
    RemoteError,
    RequestTimeout,
    ValueTooLarge,
)
from isoplug.host.levels import level_number
from isoplug.host.manifest import RestartPolicy
from isoplug.runner.dispatch import MAX_RESULT_BYTES
from isoplug.wire import encode_value
from tests.plugins_fixtures import FAST, plugins_dir, running
from tests.record_waiter import watching


class Thing:
    """Something of the host's own that nothing knows how to send."""


@dataclasses.dataclass
class Holder:
    x: object


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Pair:
    left: int
    right: int


# -- item 9: every argument reaches the method -------------------------------------------------


async def test_positional_arguments_reach_the_method(tmp_path: Path) -> None:
    """host.call passes positional arguments through, to async and sync (worker) methods."""
    async with running(tmp_path, "traps") as (host, _):
        assert await host.call("traps", "hello", "ann") == "hello ann"
        assert await host.call("traps", "hello", 5) == "hello 5"  # 5 is the name, not a timeout
        assert await host.call("traps", "hello", "ann", "hi") == "hi ann"
        assert await host.call("traps", "hello", "ann", greeting="hey") == "hey ann"
        assert await host.call("traps", "spread", 1, 2, 3, x=4) == {
            "first": 1,
            "rest": [2, 3],
            "named": {"x": 4},
        }


async def test_no_parameter_name_is_reserved(tmp_path: Path) -> None:
    """A method's parameters may be called timeout, plugin_id, method, args or kwargs."""
    async with running(tmp_path, "traps") as (host, _):
        assert await host.call("traps", "wait_for_job", job="build", timeout=5) == (
            "build within 5"
        )
        assert await host.call("traps", "wait_for_job", "test", 0.5) == "test within 0.5"
        assert await host.call(
            "traps", "names_isoplug_uses", plugin_id="p", method="m", args=[1], kwargs={"a": 2}
        ) == ["p", "m", [1], {"a": 2}]
        assert (
            await host.call_with(
                "traps", "wait_for_job", kwargs={"job": "deploy", "timeout": 60}, timeout=5
            )
            == "deploy within 60"
        )


async def test_call_with_takes_isoplugs_options(tmp_path: Path) -> None:
    """call_with: arguments as args/kwargs, and a timeout that cancels the call."""
    async with running(tmp_path, "traps") as (host, _):
        assert (
            await host.call_with("traps", "hello", args=["bob"], kwargs={"greeting": "hey"})
            == "hey bob"
        )
        with pytest.raises(RequestTimeout, match=r"'traps' did not answer 'nap'.* 0.2 s"):
            await host.call_with("traps", "nap", kwargs={"seconds": 30}, timeout=0.2)
        assert await host.call_with("traps", "hello", args=("ann",), timeout=None) == "hello ann"


async def test_arguments_that_do_not_fit_get_a_clear_error(tmp_path: Path) -> None:
    """Positional arguments a method cannot take, and the old timeout=, say what to do."""
    async with running(tmp_path, "traps") as (host, _):
        with pytest.raises(
            InvalidParams, match=r"traps.keyword_only\(\*, name: 'str'\).*too many positional"
        ):
            await host.call("traps", "keyword_only", "ann")
        with pytest.raises(InvalidParams) as raised:
            await host.call("traps", "hello", name="ann", timeout=5)
        message = str(raised.value)
        assert "unexpected keyword argument 'timeout'" in message
        assert "use host.call_with(..., timeout=...)" in message
        # A misspelled keyword is named with the missing argument it leaves.
        with pytest.raises(
            InvalidParams,
            match=r"missing a required argument: 'name'; unexpected keyword argument\(s\) 'nmae'",
        ):
            await host.call("traps", "hello", nmae="ann")
        with pytest.raises(TypeError, match="args must be a tuple or list"):
            await host.call_with("traps", "hello", args="ann")
        with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
            await host.call_with("traps", "hello", args=["ann"], timeout="5")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout must be 0 or more seconds"):
            await host.call_with("traps", "hello", args=["ann"], timeout=-1)
        with pytest.raises(TypeError, match="kwargs must be a mapping of argument names"):
            await host.call_with("traps", "hello", kwargs={1: "ann"})  # type: ignore[dict-item]
        assert await host.call("traps", "hello", name="ann") == "hello ann"


async def test_waits_and_publish_check_their_arguments_as_call_with_does(tmp_path: Path) -> None:
    """An async predicate (its coroutine, never awaited, counted as true: wait_for returned at
    once), a timeout that is no number (a raw TypeError from asyncio) or negative (it timed
    out at once, "not ready within -1 s"), and an event name that is not a str (published
    to nobody, 0) are refused, in call_with's words."""

    async def never(info: PluginInfo) -> bool:
        return False

    def plain_but_returns_a_coroutine(info: PluginInfo) -> Any:
        return never(info)

    async with running(tmp_path, "traps") as (host, _):
        with pytest.raises(
            TypeError, match=r"predicate .*<locals>\.never is an async function, whose coroutine"
        ):
            await host.wait_for("traps", never, timeout=2)  # type: ignore[arg-type]
        with pytest.raises(
            TypeError, match=r"plain_but_returns_a_coroutine returned a coroutine, an awaitable"
        ):
            await host.wait_for("traps", plain_but_returns_a_coroutine, timeout=2)
        waits: list[Callable[[Any], Awaitable[object]]] = [
            host.wait_ready,
            lambda timeout: host.wait_for("traps", lambda info: False, timeout),
        ]
        for wait in waits:
            with pytest.raises(
                TypeError, match=r"^timeout must be a number of seconds or None, got str '5'$"
            ):
                await wait("5")
            with pytest.raises(ValueError, match=r"^timeout must be 0 or more seconds, got -1$"):
                await wait(-1)
        with pytest.raises(TypeError, match="an event's name is a str"):
            await host.publish(123)  # type: ignore[arg-type]
        ready = await host.wait_for("traps", lambda info: info.state is PluginState.READY, 30)
        assert ready.id == "traps"


# -- item 11: wait_ready() says when plugins failed ---------------------------------------------


async def test_wait_ready_raises_naming_a_plugin_whose_setup_keeps_failing(
    tmp_path: Path,
) -> None:
    """Retries (its [restart] policy) are waited for; then PluginFailed with the last error."""
    async with Host(plugins_dir(tmp_path, "setup_crash"), config=FAST) as host:
        with pytest.raises(PluginFailed) as raised:
            await host.wait_ready(20)
        info = host.plugin("setup_crash")
        assert info.state is PluginState.FAILED and info.restarts == 2  # max_restarts = 2
        error = raised.value
        assert list(error.failures) == ["setup_crash"]
        text = str(error)
        assert text.startswith("1 plugin failed: setup_crash\nsetup_crash: ")
        assert "crash loop: 3 crashes within 60 s (limit 2), giving up" in text
        assert "setup() raised RuntimeError: database unreachable" in text
        assert 'setup_crash_plugin.py", line' in text  # the plugin's traceback
        infos = await host.wait_ready(20, raise_on_failure=False)
        assert [i.state for i in infos] == [PluginState.FAILED]


def test_the_default_restart_budget_is_about_16_seconds() -> None:
    """What the README says wait_ready waits through for a setup that keeps raising: five
    restarts' backoff (0.5 + 1 + 2 + 4 + 8 s) plus the six starts."""
    policy = RestartPolicy()
    assert policy.max_restarts == 5
    assert sum(policy.delay(n) for n in range(1, policy.max_restarts + 1)) == 15.5


async def test_wait_ready_raises_as_soon_as_a_plugin_cannot_load(tmp_path: Path) -> None:
    """An import failure is final at once: wait_ready does not wait for the others."""
    gate = asyncio.Event()

    async def wait() -> None:
        await gate.wait()

    async with Host(plugins_dir(tmp_path, "gated", "import_raises"), config=FAST) as host:
        host.register_capability("gate.wait", wait)
        with pytest.raises(PluginFailed) as raised:
            await host.wait_ready(20)
        assert list(raised.value.failures) == ["import_raises"]
        assert "raised ImportError: this plugin needs libfoo 2.0" in str(raised.value)
        assert host.plugin("gated").state is PluginState.STARTING
        not_ready = r"not ready within 0.3 s: gated starting \(restarts 0"
        with pytest.raises(TimeoutError, match=not_ready):
            await host.wait_ready(0.3, raise_on_failure=False)
        # A call's time running out while its plugin starts is a timeout too (never sent).
        with pytest.raises(TimeoutError) as timed_out:
            await host.call_with("gated", "ping", timeout=0.3)
        assert isinstance(timed_out.value, PluginNotReady)
        assert isinstance(timed_out.value, PluginUnavailable)  # as before: caught there too
        assert timed_out.value.reason is Unavailability.NOT_READY
        assert "the plugin was not ready within 0.3 s (state: starting)" in str(timed_out.value)
        gate.set()
        infos = await host.wait_ready(20, raise_on_failure=False)
        assert {i.id: i.state for i in infos} == {
            "gated": PluginState.READY,
            "import_raises": PluginState.FAILED,
        }
        assert await host.call("gated", "ping") == "pong"


async def test_plugin_failed_names_every_failed_plugin(tmp_path: Path) -> None:
    """Once both have failed, the error names both, each with its own reason."""
    async with Host(plugins_dir(tmp_path, "import_raises", "missing_module"), config=FAST) as host:
        await host.wait_ready(20, raise_on_failure=False)
        with pytest.raises(PluginFailed) as raised:
            await host.wait_ready(20)
        failures = raised.value.failures
        assert sorted(failures) == ["import_raises", "missing_module"]
        assert "this plugin needs libfoo 2.0" in failures["import_raises"]
        assert "entry module 'not_there' not found" in failures["missing_module"]
        assert str(raised.value).startswith("2 plugins failed: ")


@pytest.mark.parametrize(
    ("source", "shown", "last"),
    [
        # Python prints a file that does not compile as its line and a caret, no traceback.
        ("x = 1\ndef broken(:\n", ['  File "{path}", line 2', "    def broken(:"], "SyntaxError"),
        # A missing dependency: from the plugin's own import line on.
        (
            "import isoplug_no_such_dependency\n",
            ['  File "{path}", line 1, in <module>', "    import isoplug_no_such_dependency"],
            "ModuleNotFoundError: No module named 'isoplug_no_such_dependency'",
        ),
    ],
)
async def test_an_import_failure_shows_the_plugins_code_not_the_loaders(
    tmp_path: Path, source: str, shown: list[str], last: str
) -> None:
    """The traceback of a plugin that cannot be imported starts where the plugin's code does:
    isoplug's loader and importlib's frames, the same for every plugin, are left out."""
    plugin = tmp_path / "plugins" / "broken"
    plugin.mkdir(parents=True)
    (plugin / "plugin.toml").write_text('id = "broken"\nversion = "1"\nentry = "broken:Broken"\n')
    (plugin / "broken.py").write_text(source)
    with watching("isoplug.host") as waiter:
        async with Host(tmp_path / "plugins", config=FAST) as host:
            await host.wait_ready(20, raise_on_failure=False)
            report = await waiter.wait_for("isoplug.host", "cannot be loaded")
    text = report.getMessage()
    path = str((plugin / "broken.py").resolve())
    lines = text.splitlines()
    for expected in shown:
        assert expected.format(path=path) in lines, text
    assert lines[-1].strip().startswith(last), text
    assert "loader.py" not in text and "<frozen importlib" not in text, text


# -- item 12: what crosses, and what cannot -----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "kwargs", "where"),
    [
        (
            "points",
            {"count": 3},
            "result['points'][2] is a traps_plugin.Point "
            "(Encoding objects of type Point is unsupported)",
        ),
        (
            "nested_unencodable",
            {},
            "result[1]['pairs'][1]['bad'] has a key of type complex",
        ),
        ("too_big_int", {}, "result['n'] is an int (can't serialize ints < -2**63 or > 2**64 - 1)"),
        ("self_containing", {}, "result[1] contains itself"),
    ],
)
async def test_a_result_that_cannot_cross_names_the_method_and_where_it_fails(
    tmp_path: Path, method: str, kwargs: dict[str, Any], where: str
) -> None:
    """The error names plugin.method, the path inside the result and the offending type."""
    async with running(tmp_path, "traps") as (host, _):
        with pytest.raises(RemoteError) as raised:
            await host.call_with("traps", method, kwargs=kwargs)
        error = raised.value
        assert error.remote_type == "isoplug.errors.UnencodableValue"
        assert error.remote_message.startswith(
            f"traps.{method} returned a value that cannot be sent to the host: {where}"
        )
        assert "CallOutcome" not in str(error)
        assert await host.call("traps", "points", 2) == {"points": [[0, 0], [1, 1]], "count": 2}


async def test_a_result_too_large_for_a_frame_says_so(tmp_path: Path) -> None:
    """A result past the frame limit: refused by the runner with the method and the size."""
    async with running(tmp_path, "traps") as (host, _):
        too_big = r"traps.blob returned 16,7\d\d,\d{3} bytes once"
        with pytest.raises(RemoteError, match=too_big) as e:
            await host.call_with("traps", "blob", args=[MAX_RESULT_BYTES], timeout=60)
        assert e.value.remote_type == "isoplug.errors.UnencodableValue"
        assert await host.call("traps", "blob", 3) == b"xxx"


async def test_an_argument_that_cannot_cross_is_refused_before_sending(tmp_path: Path) -> None:
    """Arguments and event payloads: UnencodableValue, naming the path; nothing was sent."""
    async with running(tmp_path, "traps") as (host, _):
        with pytest.raises(UnencodableValue) as raised:
            await host.call("traps", "hello", {"who": [Thing()]})
        assert str(raised.value) == (
            "cannot send the arguments of traps.hello to its runner: args[0]['who'][0] is a "
            "tests.test_api_traps.Thing (Encoding objects of type Thing is unsupported)"
        )
        assert isinstance(raised.value, TypeError)
        with pytest.raises(UnencodableValue, match=r"^cannot send .*: greeting is a complex"):
            await host.call("traps", "hello", "ann", greeting=1j)
        with pytest.raises(UnencodableValue, match=r"cannot publish 'noted': payload\.x is a"):
            await host.publish("noted", Holder(Thing()))
        assert await host.call("traps", "hello", "ann") == "hello ann"


def nested(depth: int, bottom: object = 0) -> object:
    value = bottom
    for _ in range(depth):
        value = [value]
    return value


async def test_a_deep_value_crosses_and_one_too_deep_is_refused_as_such(tmp_path: Path) -> None:
    """200 levels cross (the 100 levels a refusal's path shows are no limit on values); past the
    interpreter's recursion limit (on any Python) a value is refused as nested too deeply, and
    one with a value that cannot be sent deep down names that value's problem, not the depth."""
    stops = r"args\[0\](\[0\]){100} \(the path stops at 100 levels\)"
    async with running(tmp_path, "echo") as (host, _):
        assert await host.call("echo", "echo", nested(200)) == nested(200)
        with pytest.raises(UnencodableValue, match=rf"{stops} is nested too deeply to be sent"):
            await host.call("echo", "echo", nested(20_000))
        with pytest.raises(UnencodableValue, match=rf"{stops} holds, deeper down, a value .*Thing"):
            await host.call("echo", "echo", nested(150, Thing()))


async def test_arguments_and_payloads_too_large_for_a_message_say_so(tmp_path: Path) -> None:
    """Past the frame limit: UnencodableValue naming the call (or the event) and the sizes, as
    for a result; nothing was sent and the runner's connection stays usable. A payload that
    nobody subscribes to yet, or that does not encode, is refused the same: it could never be
    delivered."""
    too_big = b"x" * (17 * 1024 * 1024)
    size = r"the message would take 17,8\d\d,\d{3} bytes once encoded, past the limit of 16,777,216"
    async with running(tmp_path, "traps") as (host, _):
        with pytest.raises(
            UnencodableValue, match=rf"^cannot send the arguments of traps.hello .*{size}"
        ) as raised:
            await host.call("traps", "hello", too_big)
        # What such arguments raised before, and what the docs promised: still true.
        assert isinstance(raised.value, LocalProtocolError)
        assert isinstance(raised.value, ValueTooLarge) and raised.value.limit == 16 * 1024 * 1024
        with pytest.raises(UnencodableValue, match=rf"^cannot publish 'noted': {size}"):
            await host.publish("noted", too_big)
        with pytest.raises(UnencodableValue, match=rf"^cannot publish 'nobody listens': {size}"):
            await host.publish("nobody listens", too_big)
        with pytest.raises(UnencodableValue, match=r"^cannot publish 'nobody listens': payload"):
            await host.publish("nobody listens", Thing())
        assert await host.publish("nobody listens", {"fine": 1}) == 0
        assert await host.call("traps", "hello", "ann") == "hello ann"


#: The table of what crosses between host and plugin (docs/plugins.md): each sample's key in the
#: plugin's SAMPLES, what arrives, and its type.
CROSSING: dict[str, tuple[Any, type]] = {
    "none": (None, type(None)),
    "bool": (True, bool),
    "int": (-(2**63), int),
    "big_int": (2**64 - 1, int),
    "float": (1.5, float),
    "str": ("text", str),
    "bytes": (b"\x00\xff", bytes),
    "list": ([1, "a"], list),
    "tuple": ([1, "a"], list),
    "set": ([7], list),
    "frozenset": ([8], list),
    "dict": ({"k": [1]}, dict),
    "bytearray": (b"ba", bytes),
    "memoryview": (b"mv", bytes),
    "aware_datetime": (
        datetime.datetime(2024, 5, 6, 7, 30, tzinfo=datetime.UTC),
        datetime.datetime,
    ),
    "naive_datetime": ("2024-05-06T09:30:00", str),
    "date": ("2024-05-06", str),
    "time": ("09:30:00", str),
    "timedelta": ("PT90S", str),
    "decimal": ("1.10", str),
    "uuid": ("00000000-0000-0000-0000-000000000001", str),
    "enum": ("red", str),
    "dataclass": ({"left": 1, "right": 2}, dict),
    "struct": ({"major": 1, "minor": 2}, dict),
}


async def test_what_a_result_becomes_on_the_host(tmp_path: Path) -> None:
    """Every row of the table in docs/plugins.md, as a plugin's result."""
    async with running(tmp_path, "traps") as (host, _):
        assert await host.call("traps", "sample_kinds") == list(CROSSING)
        samples = await host.call("traps", "samples")
        for key, (value, kind) in CROSSING.items():
            assert type(samples[key]) is kind, key
            assert samples[key] == value, key


async def test_what_an_argument_becomes_in_the_plugin(tmp_path: Path) -> None:
    """The same conversions apply to the host's arguments, on their way to the plugin."""
    sent = {
        "tuple": (1, "a"),
        "set": {7},
        "bytearray": bytearray(b"ba"),
        "aware_datetime": datetime.datetime(
            2024, 5, 6, 9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
        ),
        "naive_datetime": datetime.datetime(2024, 5, 6, 9, 30),
        "timedelta": datetime.timedelta(seconds=90),
        "decimal": decimal.Decimal("1.10"),
        "uuid": uuid.UUID(int=1),
        "enum": Colour.RED,
        "dataclass": Pair(1, 2),
    }
    async with running(tmp_path, "traps") as (host, _):
        arrived = await host.call("traps", "arrived", sent)
    for key, (type_name, value) in arrived.items():
        expected, kind = CROSSING[key]
        assert type_name == kind.__name__, key
        assert value == expected, key


def test_the_codecs_own_error_says_where_too() -> None:
    """Every other value isoplug sends (a capability's arguments, say) names the path too."""
    with pytest.raises(LocalProtocolError) as raised:
        encode_value(CapabilityRequest(plugin="p", name="n", kwargs={"at": [1, Thing()]}))
    assert str(raised.value) == (
        "cannot send a value of type CapabilityRequest: value.kwargs['at'][1] is a "
        "tests.test_api_traps.Thing (Encoding objects of type Thing is unsupported)"
    )


def test_an_unawaited_coroutine_asks_whether_an_await_was_forgotten() -> None:
    async def now() -> float:
        return 0.0

    pending = now()
    try:
        with pytest.raises(LocalProtocolError) as raised:
            encode_value(CapabilityRequest(plugin="p", name="n", kwargs={"at": pending}))
    finally:
        pending.close()
    assert str(raised.value).endswith(
        "value.kwargs['at'] is a coroutine (Encoding objects of type coroutine is unsupported; "
        "was an await forgotten?)"
    )


def test_host_settings_given_where_plugins_configuration_goes_say_where_they_go() -> None:
    """``Host(config={"call_timeout": 5})``: a SupervisorConfig field is no plugin id."""
    with pytest.raises(TypeError, match=r"pass config=SupervisorConfig\(call_timeout=5\)"):
        Host("plugins", config={"call_timeout": 5})  # type: ignore[dict-item] # as untyped code may


def test_an_unknown_log_level_is_refused_where_it_is_given() -> None:
    """At ``SupervisorConfig()``, not at the host's start; naming the field and the names."""
    with pytest.raises(ValueError, match=r"log_level must name a level \(DEBUG, INFO, "):
        SupervisorConfig(log_level="verbose")
    assert SupervisorConfig(log_level="debug").log_level == "debug"
    with pytest.raises(ValueError, match=r"unknown log level 'verbose': give a number or a name"):
        level_number("verbose")
