"""Run plugins for a test: a real :class:`~isoplug.Host`, real runner processes.

:class:`PluginHarness` (``async with``) starts a host over one plugin's folder, or a folder of
plugins, with the capabilities a test offers (fakes, or refusals), waits until every plugin is
ready, and keeps every record its plugins (and isoplug) log. :class:`BlockingHarness` is the
same for synchronous tests: it runs the host on an event loop of its own, in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from isoplug import (
    CapabilityDenied,
    Host,
    PluginFailed,
    PluginInfo,
    PluginState,
    SupervisorConfig,
)
from isoplug.arguments import checked_names, checked_timeout
from isoplug.errors import FolderMissing, UsageError, WaitTimeout
from isoplug.host.binding import require_asyncio
from isoplug.host.config import split_host_config
from isoplug.host.registry import deeper_manifest, plugins_dir_for
from isoplug.testing.harness_operations import HarnessOperations
from isoplug.testing.records import Records, attached
from isoplug.wire.sanitize import clean_path

__all__ = ["FAST", "CapabilityCall", "PluginHarness", "check_options", "host_configs"]

#: A failing test's report shows the test's line and the error, not the harness's source.
__tracebackhide__ = True

T = TypeVar("T")

#: Short timings, so that a crash or a hang is seen within a second or two.
FAST = SupervisorConfig(
    ready_timeout=15.0,
    health_interval=0.2,
    health_timeout=1.0,
    shutdown_timeout=3.0,
    teardown_timeout=1.0,
    terminate_timeout=1.0,
    call_timeout=15.0,
)
#: More than a path can hold (a manifest's problem is capped above this, at 8000).
_MAX_SHOWN_CHARS = 8000


@dataclasses.dataclass(frozen=True)
class CapabilityCall:
    """One call of a host capability by a plugin, as the harness saw it."""

    name: str
    kwargs: dict[str, Any]


class PluginHarness(HarnessOperations):
    """A started host over ``path`` (one plugin's folder, or a folder of plugin folders).

    ``capabilities`` are offered to plugins whose manifest grants them (fakes: any function,
    or ``async def``); every call is kept in :attr:`capability_calls`. A capability in
    ``deny`` is refused: the plugin's ``ctx.call_host`` raises
    :class:`~isoplug.CapabilityDenied`, as for a capability the host does not offer (the call
    is kept too).

    ``config`` is the host's :class:`~isoplug.SupervisorConfig`, :data:`FAST` by default; one
    given replaces it whole (settings it does not give are production defaults: to change one
    and keep the fast timings, ``dataclasses.replace(FAST, call_timeout=60)``).
    ``plugin_config`` overrides plugins' ``[config]`` tables by plugin id, as
    :class:`~isoplug.Host` takes it (so does ``config`` given a mapping, as for ``Host``: the
    timings stay :data:`FAST` then); naming a plugin that is not there fails the start.

    :attr:`records` keeps the records of this host's runners (``plugin.*``, with a
    ``runner_pid`` of this host's: not those of another host in the process) and isoplug's own
    (``isoplug.*``, which every host of the process shares) from the start;
    :meth:`wait_for_record` returns each of them once. Entering waits until every plugin is
    ready: it raises
    :class:`~isoplug.PluginFailed` naming a plugin that cannot start, whether its manifest is
    invalid (the message names its folder and the key) or its runner fails,
    ``FolderMissing`` naming ``path`` when it holds no plugin at all (and the folder
    one level down that does, if one does), and ``WaitTimeout`` naming the plugins not
    ready within ``ready_timeout`` seconds.

    A runner that ends before its plugins are ready (a ``setup()`` that raises, a crash, a
    kill for not being ready within ``config.ready_timeout``) fails the start at once, with its
    error and traceback: a test wants the error now, not after the crash loop of the plugin's
    ``[restart]`` policy (about 16 s with the defaults, about 100 s for a ``setup()`` that
    never returns). ``retry_start=True`` restarts it as
    that policy says, as a host in production does.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        capabilities: Mapping[str, Callable[..., Any]] | None = None,
        deny: Iterable[str] = (),
        config: SupervisorConfig | Mapping[str, Mapping[str, Any]] = FAST,
        plugin_config: Mapping[str, Mapping[str, Any]] | None = None,
        ready_timeout: float = 30.0,
        retry_start: bool = False,
    ) -> None:
        # Absolute, as the host makes its folder: its problems name the folders so.
        self.path = Path(path).absolute()
        self.config, self.plugin_config = host_configs(config, plugin_config, "PluginHarness")
        denied = check_options(capabilities, deny, ready_timeout, retry_start)
        self.ready_timeout = ready_timeout
        self.retry_start = retry_start
        self.records = Records()
        self.records.addFilter(self._from_this_host)
        #: The host whose runners' records :attr:`records` keeps (set before it starts).
        self._records_host: Host | None = None
        self.capability_calls: list[CapabilityCall] = []
        self._capabilities = dict(capabilities or {})
        for name in denied:
            self._capabilities[name] = _refusal(name)
        self._host: Host | None = None
        #: The ids of the host's plugins, known once it started: its host does not reload, so
        #: they never change (see :meth:`_id`).
        self._started_ids: list[str] = []
        self._stack = contextlib.AsyncExitStack()

    @property
    def host(self) -> Host:
        """The running host (for anything the harness does not wrap)."""
        if self._host is None:
            raise UsageError("the harness is not running: use `async with PluginHarness(...)`")
        return self._host

    async def __aenter__(self) -> PluginHarness:
        # Before anything is opened: on trio, say, nothing of the harness could work.
        require_asyncio("start PluginHarness (it runs an isoplug Host)")
        try:
            directory = self._stack.enter_context(plugins_dir_for(self.path))
            for name in ("plugin", "isoplug"):
                self._stack.enter_context(attached(self.records, name))
            host = Host(directory, config=self.config, plugin_config=self.plugin_config)
            self._records_host = host
            for name, function in self._capabilities.items():
                host.register_capability(name, self._kept(name, function))
            self._host = await self._stack.enter_async_context(host)
            if host.problems:
                # The host skips a plugin it cannot read and runs the others; a test of it
                # must not pass (or fail later, puzzlingly) without it.
                raise PluginFailed(_problems_by_folder(host.problems, directory, self.path))
            if not host.plugins():
                # Pointed at the wrong folder: say so now, not at the first call.
                raise FolderMissing(_no_plugin(self.path))
            _check_plugin_config_ids(self.plugin_config, host)
            self._started_ids = self.plugin_ids()
            if self.retry_start:
                await host.wait_ready(self.ready_timeout)
            else:
                await _ready_or_first_failure(host, self.ready_timeout)
        except BaseException:
            self._host = None
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._host = None
        await self._stack.aclose()

    def _from_this_host(self, record: logging.LogRecord) -> bool:
        """Whether :attr:`records` keeps ``record``: every host of the process replays its
        runners' records onto the same loggers, and each is told apart by its runner's pid
        (which the host knows before it replays a record with it)."""
        runner_pid = getattr(record, "runner_pid", None)
        host = self._records_host
        # isoplug's own records name no runner: the process's hosts share those loggers.
        return runner_pid is None or host is None or runner_pid in host.runner_pids()

    def _kept(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        async def capability(**kwargs: Any) -> Any:
            self.capability_calls.append(CapabilityCall(name, kwargs))
            result = function(**kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return capability

    def plugin_ids(self) -> list[str]:
        """The ids of the plugins running, in order."""
        return [info.id for info in self.host.plugins()]

    def _id(self, plugin_id: str | None) -> str:
        if plugin_id is not None:
            return plugin_id
        # Not the host's plugins() now: from another loop, that read would fail first, and
        # its error would name the read, not what the test asked for (a call, say).
        ids = self._started_ids if self._host is not None else self.plugin_ids()
        if len(ids) != 1:
            raise ValueError(f"several plugins run ({', '.join(ids)}): say which one")
        return ids[0]

    def info(self, plugin_id: str | None = None) -> PluginInfo:
        """The state of the plugin (the only one when ``plugin_id`` is None)."""
        return self.host.plugin(self._id(plugin_id))

    async def call(
        self, method: str, /, *args: Any, plugin: str | None = None, **kwargs: Any
    ) -> Any:
        """Call ``method`` of the plugin (the only one, unless ``plugin`` names it) with
        ``args`` and ``kwargs``, as a host application would; its result, or the exception the
        host raises (:class:`~isoplug.IsoplugError` subclasses).

        ``plugin`` is the harness's: to pass an argument named ``plugin`` to the method, use
        :meth:`call_in`, which reserves no name."""
        return await self.host.call(self._id(plugin), method, *args, **kwargs)

    async def call_in(self, plugin_id: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` of the plugin ``plugin_id``, as :meth:`~isoplug.Host.call` does:
        every argument goes to the method, whatever its name (``plugin`` too)."""
        return await self.host.call(plugin_id, method, *args, **kwargs)

    async def publish(self, event: str, payload: Any = None) -> int:
        """Publish ``event`` to every plugin subscribed to it; how many were."""
        return await self.host.publish(event, payload)

    async def crash(self, plugin: str | None = None, *, timeout: float = 30.0) -> PluginInfo:
        """Kill the plugin's runner process (SIGKILL, as a segfault or the OOM killer would)
        and wait until the host has restarted it and it is ready again; its new state. The host
        did not send that signal: its exit account says so (``sender unknown``), as of any kill
        from outside.

        Raises :class:`~isoplug.PluginFailed` as soon as the host gives the plugin up (its
        ``[restart]`` policy is ``never``, or it crashed too often), naming why, and
        ``WaitTimeout`` naming its state if it is neither ready again nor failed within
        ``timeout`` seconds."""
        plugin_id = self._id(plugin)
        before = self.host.plugin(plugin_id)
        if before.pid is None:
            raise UsageError(f"plugin {plugin_id!r} has no runner process ({before.state.value})")
        os.kill(before.pid, signal.SIGKILL)
        after = await self.wait_for(
            plugin_id,
            lambda info: (
                (info.restarts > before.restarts and info.state is PluginState.READY)
                or info.state is PluginState.FAILED
            ),
            timeout,
            what=f"plugin {plugin_id!r} to be restarted and ready after its crash",
        )
        if after.state is PluginState.FAILED:
            raise PluginFailed({plugin_id: after.error or "failed after its crash"})
        return after

    async def wait_for(
        self,
        plugin_id: str,
        predicate: Callable[[PluginInfo], bool],
        timeout: float | None = 30.0,
        *,
        what: str = "",
    ) -> PluginInfo:
        """:meth:`~isoplug.Host.wait_for`, whose ``WaitTimeout`` says what it waited for
        (``what``, else the predicate) and the plugin's state then."""
        try:
            return await self.host.wait_for(plugin_id, predicate, timeout)
        except TimeoutError:
            waited = what or f"plugin {plugin_id!r} to satisfy {predicate!r}"
            state = self.host.plugin(plugin_id).summary()
            raise WaitTimeout(f"waited {timeout:g} s for {waited}; it is {state}") from None

    async def wait_for_record(
        self,
        *,
        plugin: str | None = None,
        logger: str | None = None,
        level: int | str | None = None,
        stream: str | None = None,
        text: str = "",
        timeout: float = 20.0,
    ) -> logging.LogRecord:
        """The earliest record that fits (see :meth:`Records.select`) and that no earlier
        ``wait_for_record`` of this harness returned, once there is one
        (:meth:`Records.take_record`): each record is returned once, so a wait after an action
        is not answered by a record from before it that a wait returned already. To look at
        every record, returned or not: ``records.select(...)``, or
        ``records.wait_for_record(...)`` to wait for one; ``records.clear()`` forgets them."""
        return await self.records.take_record(
            plugin=plugin, logger=logger, level=level, stream=stream, text=text, timeout=timeout
        )


async def _ready_or_first_failure(host: Host, timeout: float) -> None:
    """:meth:`~isoplug.Host.wait_ready`, but a plugin whose runner ended before it was ready
    (RESTARTING: waiting out the backoff of its ``[restart]`` policy) fails it at once."""
    ready = asyncio.ensure_future(host.wait_ready(timeout))
    crashed = [
        asyncio.ensure_future(
            host.wait_for(info.id, lambda info: info.state is PluginState.RESTARTING)
        )
        for info in host.plugins()
    ]
    try:
        await asyncio.wait([ready, *crashed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in (ready, *crashed):
            waiting.cancel()
        await asyncio.gather(ready, *crashed, return_exceptions=True)
    failed = [
        waiting.result()
        for waiting in crashed
        if waiting.done() and not waiting.cancelled() and waiting.exception() is None
    ]
    if failed:
        raise PluginFailed({info.id: _first_failure(info) for info in failed})
    ready.result()


def _first_failure(info: PluginInfo) -> str:
    """Why ``info``'s runner ended before it was ready: the plugin's error (a setup()'s, with
    its traceback) and the runner's exit account (sanitized by the host)."""
    ended = (
        info.last_exit.describe()
        if info.last_exit is not None
        else "its runner ended before it was ready"
    )
    account = (
        f"{ended}; not restarted: the harness fails a start at its first failure "
        "(PluginHarness(retry_start=True) restarts it as its [restart] policy says)"
    )
    return f"{info.error}\n{account}" if info.error else account


def _problems_by_folder(problems: Iterable[str], directory: Path, given: Path) -> dict[str, str]:
    """The host's ``problems`` by plugin folder name (for :class:`~isoplug.PluginFailed`)."""
    if directory != given:
        # One plugin's folder, linked from a scratch folder of plugins: the host names it by
        # its real folder already (see plugins_dir_for), in its records too.
        return {given.name: "\n".join(problems)}
    by_folder: dict[str, list[str]] = {}
    # A problem starts with its folder's path as the sanitizer shows it (a name holding a
    # control character is escaped there, and so is it here, as the key).
    children = [
        (clean_path(child.name, _MAX_SHOWN_CHARS), f"{clean_path(child, _MAX_SHOWN_CHARS)}{os.sep}")
        for child in sorted(directory.iterdir())
    ]
    for problem in problems:
        folder = next(
            (name for name, where in children if problem.startswith(where)),
            clean_path(directory, _MAX_SHOWN_CHARS),
        )
        by_folder.setdefault(folder, []).append(problem)
    return {folder: "\n".join(texts) for folder, texts in by_folder.items()}


def host_configs(
    config: SupervisorConfig | Mapping[str, Mapping[str, Any]],
    plugin_config: Mapping[str, Mapping[str, Any]] | None,
    harness: str,
) -> tuple[SupervisorConfig, dict[str, dict[str, Any]] | None]:
    """A harness's ``config`` and ``plugin_config`` as the host's settings and the plugins'
    configuration, as :class:`~isoplug.Host` takes them; but a mapping given as ``config``
    (the plugins' configuration) keeps the timings :data:`FAST`, not production's."""
    _, plugins = split_host_config(
        config, plugin_config, owner=harness, settings_form="dataclasses.replace(FAST, {})"
    )
    return (config if isinstance(config, SupervisorConfig) else FAST), plugins


def check_options(
    capabilities: Mapping[str, Callable[..., Any]] | None,
    deny: Iterable[str],
    ready_timeout: float,
    retry_start: bool,
) -> tuple[str, ...]:
    """Raise :class:`TypeError` / :class:`ValueError` for a harness option of the wrong kind,
    where the harness is made (a ``ready_timeout="30"`` reached asyncio as a raw
    ``TypeError``; ``deny="clock.now"`` denied its letters); the names ``deny`` lists."""
    if capabilities is not None and not (
        isinstance(capabilities, Mapping)
        and all(isinstance(name, str) and callable(fake) for name, fake in capabilities.items())
    ):
        raise TypeError(
            "capabilities must map capability names to functions ({'clock.now': lambda: "
            f"'noon'}}), got {type(capabilities).__name__} {capabilities!r:.60}"
        )
    checked_timeout(ready_timeout, "ready_timeout", above_zero=True, none=False)
    if not isinstance(retry_start, bool):
        raise TypeError(f"retry_start must be True or False, got {retry_start!r:.60}")
    return checked_names(deny, "deny", "capability names")


def _check_plugin_config_ids(plugin_config: Mapping[str, Any] | None, host: Host) -> None:
    """Raise :class:`ValueError` when ``plugin_config`` names a plugin the host does not run:
    a test that configures a plugin by a misspelt id would otherwise run it unconfigured."""
    running = {info.id for info in host.plugins()}
    unknown = sorted(set(plugin_config or {}) - running)
    if unknown:
        raise ValueError(
            f"plugin_config names plugin(s) not found: {', '.join(unknown)}; the plugins found: "
            f"{', '.join(sorted(running)) or 'none'}"
        )


#: What the host of a BlockingHarness, used from another loop, advises instead.


def _refusal(name: str) -> Callable[..., Any]:
    def refuse(**kwargs: Any) -> Any:
        raise CapabilityDenied(f"capability {name!r} is denied by the test")

    return refuse


def _no_plugin(path: Path) -> str:
    """Why the harness over ``path`` runs no plugin (it found none, and no problem either)."""
    shown = clean_path(path, _MAX_SHOWN_CHARS)
    why = (
        f"no plugin in {shown}: neither it nor its folders hold a plugin.toml (give one "
        "plugin's folder, which holds a plugin.toml, or a folder of plugin folders)"
    )
    deeper = deeper_manifest(path)
    if deeper is None:
        return why
    meant = clean_path(deeper.parent.parent, _MAX_SHOWN_CHARS)
    shown_manifest = clean_path(deeper, _MAX_SHOWN_CHARS)
    return f"{why}; {shown_manifest} is one level deeper: did you mean {meant}?"
