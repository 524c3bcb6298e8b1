"""Every public exception of isoplug pickles to an equal one, as a ``ProcessPoolExecutor`` or
``multiprocessing`` worker hands it back to its parent: same type, ``str()``, ``args`` and
attributes. Several used not to unpickle at all (a constructor whose signature is not their
``args``), which broke the pool."""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import pickle
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import isoplug
from isoplug import errors
from isoplug.control import CapabilityDenied
from isoplug.host import ManifestError, PluginNotReady, PluginUnavailable, Unavailability
from tests.plugins_fixtures import FAST, plugins_dir

#: The modules whose ``__all__`` a user imports from (docs/reference/ documents them).
PUBLIC_MODULES = (
    "isoplug",
    "isoplug.errors",
    "isoplug.host",
    "isoplug.logs",
    "isoplug.otel",
    "isoplug.testing",
    "isoplug.control",
)


def _public_exceptions() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attribute in module.__all__:
            value = getattr(module, attribute)
            if isinstance(value, type) and issubclass(value, BaseException):
                found.add(value)
    return found


def _remote(cls: type[errors.RemoteError]) -> errors.RemoteError:
    return cls("calc.divide", "builtins.ZeroDivisionError", "division by zero", "Traceback...")


def _not_asked() -> errors.MethodNotFound:
    error = errors.MethodNotFound("calc.nope", "isoplug.errors.MethodNotFound", "no 'nope'", "")
    error.asked = False
    return error


def _version_mismatch() -> errors.VersionMismatch:
    error = errors.VersionMismatch("no protocol version both sides speak")
    error.peer_versions = (3, 4)
    error.peer_library = "9.9"
    return error


def _private_capability_failure() -> errors.CapabilityFailed:
    error = errors.CapabilityFailed("clock.now raised OSError: no clock")
    error.traceback_is_private = True
    return error


def _request_timeout() -> errors.RequestTimeout:
    error = errors.RequestTimeout("plugin 'calc' did not answer 'slow' within 0.2 s")
    # The RPC layer's holds a task of its loop: as unpicklable, and as meaningless elsewhere.
    error.late_answer = threading.Lock()
    return error


#: Each public exception as isoplug constructs it.
SAMPLES: dict[type[BaseException], Callable[[], BaseException]] = {
    errors.IsoplugError: lambda: errors.IsoplugError("something"),
    errors.AddressError: lambda: errors.AddressError("'ftp://x' is not an address"),
    errors.AuthenticationFailed: lambda: errors.AuthenticationFailed("wrong session token"),
    errors.CapabilityFailed: _private_capability_failure,
    errors.ConfigInvalid: lambda: errors.ConfigInvalid("plugin 'calc': field 'x': not an int"),
    errors.ConnectError: lambda: errors.ConnectError("nothing listens at unix:/x"),
    errors.ConnectionBroken: lambda: errors.ConnectionBroken("EOF mid-frame"),
    errors.ConnectionClosed: lambda: errors.ConnectionClosed("closed"),
    errors.FolderMissing: lambda: errors.FolderMissing("plugins directory /x does not exist"),
    errors.FolderUnreadable: lambda: errors.FolderUnreadable("/x cannot be read: no r"),
    errors.FrameTooLarge: lambda: errors.FrameTooLarge(20_000_000, 16_777_216),
    errors.HandshakeError: lambda: errors.HandshakeError("no session"),
    errors.HandshakeTimeout: lambda: errors.HandshakeTimeout("no welcome within 5 s"),
    errors.InvalidParams: lambda: _remote(errors.InvalidParams),
    errors.LocalProtocolError: lambda: errors.LocalProtocolError("not now"),
    errors.MethodNotFound: _not_asked,
    errors.UsageError: lambda: errors.UsageError("Host.start(): the host is running"),
    errors.NotAFolder: lambda: errors.NotAFolder("plugins directory /x is not a directory"),
    errors.NoTemporaryFolder: lambda: errors.NoTemporaryFolder(
        [("/tmp", "No space left on device")], 28
    ),
    errors.PluginBusy: lambda: _remote(errors.PluginBusy),
    errors.PluginFailed: lambda: errors.PluginFailed({"calc": "boom", "greeter": "bang"}),
    errors.ProtocolError: lambda: errors.ProtocolError("garbage"),
    errors.RemoteError: lambda: _remote(errors.RemoteError),
    errors.RemoteProtocolError: lambda: errors.RemoteProtocolError("oversized frame"),
    errors.RequestCancelled: lambda: _remote(errors.RequestCancelled),
    errors.RequestTimeout: _request_timeout,
    errors.SelfForwarding: lambda: errors.SelfForwarding("a receiver of this process"),
    errors.TransportError: lambda: errors.TransportError("reset"),
    errors.UnencodableValue: lambda: errors.UnencodableValue("args[0] is an object"),
    errors.ValueTooLarge: lambda: errors.ValueTooLarge("too large to send", 20_000_000, 1_000),
    errors.VersionMismatch: _version_mismatch,
    errors.WaitTimeout: lambda: errors.WaitTimeout("plugin 'calc' not ready within 0.2 s"),
    PluginUnavailable: lambda: PluginUnavailable(
        "no plugin 'nosuch' (plugins: calc)", reason=Unavailability.UNKNOWN, plugin_id="nosuch"
    ),
    PluginNotReady: lambda: PluginNotReady(
        "plugin 'calc' was not ready within 1 s", reason=Unavailability.NOT_READY, plugin_id="calc"
    ),
    ManifestError: lambda: ManifestError(Path("/x/calc/plugin.toml"), "id", "missing\tkey"),
    CapabilityDenied: lambda: CapabilityDenied("plugin 'calc' may not call clock.now"),
}


def test_every_public_exception_has_a_sample() -> None:
    """A new public exception fails here until it has one: it cannot be forgotten."""
    assert _public_exceptions() == set(SAMPLES)


def _assert_equal(back: BaseException, original: BaseException) -> None:
    assert type(back) is type(original)
    assert str(back) == str(original)
    assert back.args == original.args
    attributes = {name: value for name, value in vars(original).items() if name != "late_answer"}
    assert {name: getattr(back, name) for name in attributes} == attributes
    for name in ("reason", "plugin_id", "remote_type", "remote_message", "failures", "asked"):
        assert getattr(back, name, None) == getattr(original, name, None)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("cls", list(SAMPLES), ids=lambda cls: getattr(cls, "__name__", ""))
def test_a_public_exception_pickles_to_an_equal_one(
    cls: type[BaseException], protocol: int
) -> None:
    original = SAMPLES[cls]()
    back = pickle.loads(pickle.dumps(original, protocol=protocol))
    _assert_equal(back, original)
    if isinstance(original, errors.RequestTimeout):
        assert back.late_answer is None


async def _call_an_unknown_plugin(plugins: str) -> None:
    async with isoplug.Host(plugins, config=FAST) as host:
        await host.wait_ready(30)
        await host.call("nosuch", "echo", 1)


def _job(plugins: str) -> None:
    asyncio.run(_call_an_unknown_plugin(plugins))


def test_a_host_error_raised_in_a_process_pool_job_reaches_the_parent(tmp_path: Path) -> None:
    """It used to break the pool (``BrokenProcessPool``): the parent could not unpickle it."""
    plugins = plugins_dir(tmp_path, "echo")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(_job, str(plugins))
        with pytest.raises(PluginUnavailable, match="no plugin 'nosuch'") as caught:
            future.result(timeout=120)
    assert caught.value.reason is Unavailability.UNKNOWN
    assert caught.value.plugin_id == "nosuch"
