"""``isoplug.Host``: run a directory of plugins from inside an asyncio application.

::

    async with isoplug.Host(plugins_dir="plugins") as host:
        host.register_capability("clock.now", time.time)
        await host.wait_ready()
        print(await host.call("greeter", "greet", name="Ada"))
        await host.publish("tick", {"n": 1})

Two listeners (unix sockets in private directories) serve every runner. Each runner process
gets its own random tokens; the hello's name says which runner it claims to be, the token
proves it, and the kernel's word on the connecting pid (``SO_PEERCRED``) must agree, before
the handshake ends (the route's ``admit``). On the event loop's listener, connections are
routed by their hello *role* (:mod:`isoplug.host.routes`): the ``"control"`` role goes to the
runner's supervisor; other roles are refused with a warning. Each runner's ``"logs"``
connection goes to the other listener, the :class:`~isoplug.host.logbridge.LogBridge`'s, whose
threads replay its records; its stdout and stderr pipes are read and replayed by threads too
(:mod:`isoplug.host.stdio`): the loop never runs a logging handler for a plugin.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any

from isoplug.arguments import checked_timeout
from isoplug.errors import UsageError, hidden_from_pytest
from isoplug.host import observers, unclosed
from isoplug.host.as_pid1 import warn_if_pid1
from isoplug.host.binding import HostBinding
from isoplug.host.capabilities import CapabilityRegistry
from isoplug.host.config import SupervisorConfig, split_host_config
from isoplug.host.environment import runner_environment
from isoplug.host.host_life import INTERRUPTED, cancelled_why, open_listeners, stop_everything
from isoplug.host.host_stage import HostStage
from isoplug.host.logbridge import LogBridge
from isoplug.host.on_change import call_on_change, checked_on_change
from isoplug.host.own_loggers import keep_own_loggers_enabled
from isoplug.host.plugin_operations import PluginOperations
from isoplug.host.plugin_settings import PluginSettings
from isoplug.host.registry import (
    RunnerPlan,
    absolute_plugins_dir,
    one_plugins_folder,
    plan_runners,
)
from isoplug.host.reload import PluginReloader, reload_unavailable, report_reloader_end
from isoplug.host.routes import ConnectionRoutes
from isoplug.host.runner_set import RunnerSet
from isoplug.host.socket_folders import SocketFolders
from isoplug.host.standard_fds import fill_standard_descriptors
from isoplug.host.status import PluginInfo, PluginUnavailable, StateChange, Unavailability
from isoplug.host.supervisor import RunnerSupervisor
from isoplug.host.waits import PluginWaits, check_predicate
from isoplug.host.zygote import Zygote, fork_supported
from isoplug.log_guard import guarded_logger
from isoplug.logs import ReplayLimits
from isoplug.transport import Listener

__all__ = ["Host"]

#: Left out of a failing test's report (see isoplug.errors.hidden_from_pytest).
__tracebackhide__ = hidden_from_pytest

_log = guarded_logger("isoplug.host")

#: Cap for a name or role from a hello (unauthenticated peer text) quoted in a record.
_MAX_HELLO_CHARS = 200


#: The stages in which a host's runners and sockets live on its loop.
_HOLDING_A_LOOP = (HostStage.RUNNING, HostStage.CLOSING)


class Host(PluginOperations, PluginSettings):
    """Supervises one runner per plugin (or per group) found in ``plugins_dir`` (relative: to
    the working directory when the host is made; a later ``os.chdir()`` changes nothing).

    Use as ``async with Host(...) as host``; leaving the block (normally, by exception or by
    cancellation) stops every runner: shutdown request, then SIGTERM, then SIGKILL. Bad
    plugins are reported in :attr:`problems` (and logged) and skipped.

    ``on_change`` is called (on the event loop, must not block) with every
    :class:`~isoplug.host.status.StateChange`; every change is also logged on
    ``isoplug.host``. It must be a plain function (an ``async def`` one is a
    :class:`TypeError` here: it would never be awaited).

    ``plugin_config`` overrides plugins' ``[config]`` tables, by plugin id: ``{"greeter":
    {"greeting": "Hi"}}`` (tables are merged key by key; see :meth:`set_config`). ``config``
    is the host's own :class:`SupervisorConfig`; given a mapping instead
    (``Host(dir, config={"greeter": {...}})``), it is taken as ``plugin_config``.

    ``reload=True`` watches ``plugins_dir`` while the host runs (needs ``isoplug[reload]``):
    changed code restarts that plugin's runner only, a new plugin folder starts, a removed one
    stops, a changed manifest is read again (see :mod:`isoplug.host.reload`).
    """

    def __init__(
        self,
        plugins_dir: str | os.PathLike[str],
        *,
        config: SupervisorConfig | Mapping[str, Mapping[str, Any]] | None = None,
        on_change: Callable[[StateChange], None] | None = None,
        log_limits: ReplayLimits | None = None,
        reload: bool = False,
        plugin_config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if reload and (why := reload_unavailable()) is not None:
            raise UsageError(why)
        self.config, plugin_config = split_host_config(config, plugin_config)
        #: Absolute: a relative one is taken from the working directory now, once.
        self.plugins_dir = absolute_plugins_dir(plugins_dir)
        self.reload = reload
        #: The hot reloader, while one runs (``reload=True``).
        self.reloader: PluginReloader | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._on_change = checked_on_change(on_change)
        self._capabilities = CapabilityRegistry()
        #: Every state change of its runners reaches the host through this, weakly while the
        #: host is in use (see isoplug.host.unclosed).
        self._notifier = unclosed.HostNotifier(self._state_changed)
        # A lambda: the stage it asks is the one the host is in when a wait asks.
        self._waits = PluginWaits(
            self.plugins,
            self.plugin,
            lambda what: self._life.check_changing(what),  # noqa: PLW0108
            lambda plugin_id: self._runners.supervisor(plugin_id).setup_where(),
            lambda: self._life is HostStage.RUNNING,
        )
        self._runners = RunnerSet(self.plugins_dir, plugin_config, self._waits.changed)
        self._runners.make = self._make_supervisor
        # The same dicts: read on every call and connection.
        self._supervisors = self._runners.supervisors
        self._runner_of = self._runners.runner_of
        self._listener: Listener | None = None
        self._socket_folders: SocketFolders | None = None  # made again if a cleaner deletes them
        #: Forks the runners (started on the first start; see isoplug.host.zygote).
        # Not through self: the runners' tasks and threads reach the zygote, and must not
        # keep the host alive (see isoplug.host.unclosed).
        inherit_environment = self.config.inherit_environment
        self._zygote = (
            Zygote(lambda: runner_environment((), inherit_environment))
            if fork_supported()
            else None
        )
        self._log_bridge = LogBridge(self._supervisors, log_limits)
        self._runners.log_states = self._log_bridge.runners
        self._routes = ConnectionRoutes(self._supervisors, self._log_bridge.limits.report_interval)
        #: Its loop and process, from start() on (see isoplug.host.binding).
        self._binding = HostBinding()
        #: What the :class:`RuntimeError` raised when this host is used from another event
        #: loop advises instead (None: create and use a host within one loop, or hand the work
        #: to its loop with ``asyncio.run_coroutine_threadsafe``). Set by what runs the host
        #: on a loop of its own and offers another way in, as
        #: :class:`isoplug.testing.BlockingHarness` does.
        self.other_loop_advice: str | None = None
        #: What the host's messages call the ``plugin_config`` it was given: set by what read
        #: it from elsewhere (``isoplug run`` sets ``--config FILE``), so that a message about
        #: it names what the user can fix.
        self.plugin_config_origin = "plugin_config"
        #: Released unclosed, or dropped in a forked child (see isoplug.host.unclosed).
        self._abandoned = False
        self._life = HostStage.NEW
        #: Set once the close under way has ended (None: none is under way).
        self._close_under_way: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<isoplug.Host {str(self.plugins_dir)!r} {self._life.name.lower()}>"

    def __del__(self) -> None:
        # getattr: a constructor that raised leaves no stage.
        if getattr(self, "_life", None) in (HostStage.RUNNING, HostStage.CLOSING):
            unclosed.left_unclosed(self, at_exit=False)

    # -- life cycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, traceback: object) -> None:
        # No graceful stop after a KeyboardInterrupt, as after the CLI's second Ctrl-C.
        await self._close(kill_first=INTERRUPTED if isinstance(exc, KeyboardInterrupt) else None)

    async def start(self) -> None:
        """Discover plugins, open the listener and start every runner (does not wait for them
        to be ready: see :meth:`wait_ready`). Raises :class:`~isoplug.errors.FolderMissing` /
        :class:`~isoplug.errors.NotAFolder` / :class:`~isoplug.errors.FolderUnreadable` (a
        ``FileNotFoundError`` / ``NotADirectoryError`` / ``PermissionError`` too) when
        ``plugins_dir`` is unusable (the host is then closed, as after any failed start),
        :class:`~isoplug.errors.NoTemporaryFolder` when no temporary folder can take its
        sockets' folders, and :class:`~isoplug.errors.UsageError` (a ``RuntimeError``) when
        the host was started before: a host runs once (``async with`` starts it; do not also
        call ``start()``)."""
        if self._life is not HostStage.NEW:
            self._check_here("start the host")
            raise UsageError(f"Host.start(): the host {self._life.value}")
        self._binding.bind()
        self._life = HostStage.RUNNING
        try:
            await self._start()
        except BaseException:
            # Cancelled, or the folder or a socket is unusable: nothing started is left behind.
            await self.aclose()
            raise

    async def _start(self) -> None:
        # Before the host opens anything: none of its sockets may become a standard stream.
        fill_standard_descriptors()
        keep_own_loggers_enabled()
        warn_if_pid1()
        discovery = self._runners.discover()
        unknown = sorted(set(self._runners.config_overrides) - {m.id for m in discovery.manifests})
        if unknown:
            _log.warning(
                "%s names plugins not found: %s%s",
                self.plugin_config_origin,
                ", ".join(unknown),
                # Hot reload gives a plugin folder made later the table of its id.
                "; kept for a plugin folder with that id made later" if self.reload else "",
            )
        if not discovery.manifests and (hint := one_plugins_folder(self.plugins_dir)):
            _log.warning("%s", hint)
        plans, grouping_problems = plan_runners(discovery.manifests)
        self._runners.folder_problems = [*discovery.problems, *grouping_problems]
        for problem in self._runners.folder_problems:
            _log.error("%s", problem)
        self._listener = await open_listeners(self.config, self._routes, self._log_bridge)
        self._socket_folders = SocketFolders(self._listener, self._log_bridge)
        self._socket_folders.keep()
        for plan in plans:
            self._runners.add(plan)
        observers.host_started(self)
        for supervisor in self._supervisors.values():
            supervisor.start()
        if self.reload:
            self.reloader = self._runners.reloader(self.config)
            self._reload_task = asyncio.create_task(self.reloader.run(), name="isoplug-reload")
            self._reload_task.add_done_callback(report_reloader_end)

    @property
    def problems(self) -> list[str]:
        """The plugins skipped for their folder's problem (an invalid manifest, a grouping
        clash), one text each; under hot reload, as the plugins folder now is, with the
        problems of the plugins in :attr:`kept`."""
        return self._runners.problems()

    @property
    def kept(self) -> dict[str, str]:
        """Under hot reload, the plugins that keep running as they were because their
        folder's last change was refused (a ``plugin.toml`` that no longer validates, a
        ``[config]`` the plugin's schema refuses), by id: the problem (in :attr:`problems`)."""
        return self._runners.kept()

    def _make_supervisor(self, plan: RunnerPlan) -> RunnerSupervisor:
        assert self._socket_folders is not None
        return RunnerSupervisor(
            plan,
            addresses=self._socket_folders.addresses,
            config=self.config,
            invoke_capability=self._capabilities.invoke,
            # Weakly: its tasks and the log bridge's threads must not keep the host alive.
            notify=self._notifier,
            stdio_destination=self._log_bridge.stdio_destination,
            zygote=self._zygote,
        )

    async def aclose(self) -> None:
        """Stop every runner and the listener. Idempotent: a call made while another one
        closes the host waits for that close (cancelled, it stops waiting; that close goes
        on). Safe to cancel, however often (runners are then killed at once, the rest closed
        without waiting). From its first call on, what needs a running host raises
        :class:`PluginUnavailable` saying the host is closing (then closed), and it cannot be
        started again; waits for states the close reaches (``STOPPED``) go on, and the others
        raise once it has returned.

        In a forked child of the host's process, it only lets the child's copies go (the
        runners, zygote and sockets are the parent's); from another event loop, or after the
        host's loop closed, it raises :class:`RuntimeError` (docs/host.md, "One loop, one
        process")."""
        await self._close(kill_first=None)

    async def _close(self, *, kill_first: str | None) -> None:
        """:meth:`aclose`; ``kill_first``: why every runner is killed at once instead."""
        if self._binding.foreign:
            if not self._abandoned:
                unclosed.drop_inherited(self)
            return
        self._check_here("close the host", awaited=True)
        if self._close_under_way is not None:
            # Closing twice at once closed the zygote before it had told the runners' exits
            # (each exit then "unknown"), and marked the host closed before its plugins had
            # settled (a wait for STOPPED raised): a second call waits for the first one's
            # close; cancelled, it stops waiting, and that close goes on.
            await self._close_under_way.wait()
            return
        self._close_under_way = closed = asyncio.Event()
        try:
            await self._close_once(kill_first)
        finally:
            self._close_under_way = None
            closed.set()

    async def _close_once(self, kill_first: str | None) -> None:
        if self._life is not HostStage.CLOSED:
            self._life = HostStage.CLOSING
        interrupted: BaseException | None = None
        try:
            try:
                await self._stop_reloading()
            except (asyncio.CancelledError, KeyboardInterrupt) as exc:
                # Before the runners' stop: it runs all the same, as cancelled (killing them
                # at once), and the exception goes on after it.
                interrupted, kill_first = exc, kill_first or cancelled_why(exc)
            await stop_everything(
                list(self._supervisors.values()),
                zygote=self._zygote,
                listener=self._listener,
                log_bridge=self._log_bridge,
                then_close=(self._routes.close, self._capabilities.close),
                kill_first=kill_first,
            )
            if interrupted is not None:
                raise interrupted
        finally:
            observers.host_closed(self)
            self._life = HostStage.CLOSED
            # Waiters (wait_for, wait_ready) look again: what has not come will not come.
            self._waits.changed()

    async def _stop_reloading(self) -> None:
        if self._reload_task is not None:
            self._reload_task.cancel()
            try:
                await asyncio.gather(self._reload_task, return_exceptions=True)
            finally:
                await self._runners.cancel_restarts()  # cancels them before its first await

    # -- plugins ------------------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """A snapshot of every plugin's state, pid, restart count and last exit, by id.
        Raises :class:`RuntimeError` from another event loop or process, or once the host's
        loop closed while the host was not (its plugins' states are unknown then)."""
        self._check_here("read the plugins' states")
        return [self._runner_of[pid].info(pid) for pid in sorted(self._runner_of)]

    def plugin(self, plugin_id: str) -> PluginInfo:
        """The state of one plugin (after :meth:`aclose` too: its last); raises
        :class:`PluginUnavailable` for an unknown id, and before :meth:`start`; what
        :meth:`plugins` raises."""
        self._check_here(f"read the state of plugin {plugin_id!r}")
        return self._supervisor(plugin_id).info(plugin_id)

    async def wait_ready(
        self, timeout: float | None = None, *, raise_on_failure: bool = True
    ) -> list[PluginInfo]:
        """Wait until every plugin is ready; return :meth:`plugins`.

        Raises :class:`~isoplug.errors.PluginFailed`, naming each failed plugin and its last
        error, as soon as a plugin has failed for good: at once when it cannot be loaded, or
        when its runner crashed (a ``setup`` that raised, too) more often than its
        ``[restart]`` policy allows (with the defaults, six crashes within 60 s: about 16 s of
        retries), or when more than ``max_restarts`` of its starts in a row ended before it was
        ready, however long each took (a ``setup`` that never returns: about 100 s with the
        defaults). A plugin being retried is not failed yet: this waits for it. Raises
        :class:`PluginUnavailable` (``reason`` ``STOPPED``), naming them, when plugins are
        stopped on request (:meth:`stop`, before or during the wait): they will not be ready
        until :meth:`restart`. With ``raise_on_failure=False``, failed and stopped plugins count
        as settled and the snapshot is returned instead.

        Raises ``WaitTimeout`` after ``timeout`` seconds, naming the plugins not ready,
        their last error, and where their ``setup()`` waits when the host knows (it asks each
        runner; else it quotes where setup waited when a runner was killed for not being ready
        within ``ready_timeout``); :class:`PluginUnavailable` before :meth:`start`, and once the
        host is closed while plugins were not ready (those the close stopped are not: a wait
        under way when :meth:`aclose` is called raises once it has returned). A cancel point.
        Raises ``TypeError`` / ``ValueError`` for a ``timeout`` that is not a number of 0 or
        more seconds, or None, as :meth:`call_with` does.
        """
        timeout = checked_timeout(timeout)
        self._life.check_started("wait for plugins to be ready")
        self._check_here("wait for plugins to be ready", awaited=True)
        return await self._waits.ready(timeout, raise_on_failure)

    async def wait_for(
        self,
        plugin_id: str,
        predicate: Callable[[PluginInfo], bool],
        timeout: float | None = None,
    ) -> PluginInfo:
        """Wait until ``predicate(host.plugin(plugin_id))`` holds; return that snapshot.

        Raises ``WaitTimeout`` after ``timeout`` seconds, naming the plugin, its state
        then and the time waited; :class:`PluginUnavailable` before :meth:`start`, and once the
        host is closed while the predicate does not hold (nothing changes any more). A cancel
        point. ``predicate`` is a plain function, called on the host's loop: an ``async def``
        one (whose coroutine, never awaited, would count as true) raises :class:`TypeError`,
        and so does ``timeout`` as :meth:`wait_ready`'s.
        """
        timeout = checked_timeout(timeout)
        check_predicate(predicate)
        self._life.check_started(f"wait for plugin {plugin_id!r}")
        self._check_here(f"wait for plugin {plugin_id!r}", awaited=True)
        return await self._waits.until(plugin_id, predicate, timeout)

    # -- internals ----------------------------------------------------------------------------

    def _check_here(self, what: str, *, awaited: bool = False) -> None:
        """Raise :class:`RuntimeError` when the host, holding a loop (started, not closed),
        is used from another loop or after that loop closed, or (``awaited``: from one of its
        coroutines) where no asyncio loop runs; or in a forked child."""
        if self._life in _HOLDING_A_LOOP or self._binding.foreign:
            self._binding.check(what, self.other_loop_advice, awaited=awaited)

    def _supervisor(self, plugin_id: str) -> RunnerSupervisor:
        self._life.check_started(f"find plugin {plugin_id!r}")
        try:
            return self._runners.supervisor(plugin_id)
        except PluginUnavailable as exc:
            if self._life is HostStage.RUNNING:
                raise
            # Closed before it was ever started, say: "plugins: none" is not the whole story.
            raise PluginUnavailable(
                f"{exc}; the host {self._life.value}",
                reason=Unavailability.HOST_NOT_RUNNING,
                plugin_id=plugin_id,
            ) from None

    def _state_changed(self, change: StateChange) -> None:
        keep_own_loggers_enabled()  # a dictConfig() after the start, too
        who = ", ".join(change.plugin_ids) or change.runner_id
        _log.log(
            change.level,
            "plugin %s: %s",
            who,
            change.message,  # sanitized: the supervisor builds it, quoting runner text cleaned
            extra={"plugin_ids": change.plugin_ids, "state": change.state.value},
        )
        observers.state_changed(self, change)
        if self._on_change is not None:
            call_on_change(self._on_change, change)
        self._waits.changed()
