"""One supervisor per runner: start it, watch it, restart it, stop it, account for every exit.

Life of a runner, as driven by :meth:`RunnerSupervisor._supervise`::

    STARTING --ready report--> READY --exit / hung / not ready in time--> RESTARTING --backoff-->
    STARTING ...   more than max_restarts crashes within the window --> FAILED
    STARTING --more than max_restarts starts in a row never ready, however long--> FAILED
    READY --recycled: RSS above recycle_rss, or worker threads stuck (not a crash)--> STARTING
    any state --stop()--> STOPPED      FAILED/STOPPED --restart()--> STARTING

Each runner process is one :class:`~isoplug.host.life.RunnerLife` (start, ready report, health
checks, stop: see :mod:`isoplug.host.life`), whose control connection a
:class:`~isoplug.host.control_link.ControlLink` holds; stop and restart reach it as
:mod:`~isoplug.host.commands` (sent by :mod:`~isoplug.host.runner_control`, the methods its
callers use). The supervisor takes each ready report, routes calls and events
to the current process, and decides what comes after each exit. Plugins that failed to import
are marked FAILED for good (restarting cannot fix code); a failed ``setup`` counts as a crash.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from isoplug.control import EXIT_CANNOT_CONNECT, SET_LOG_LEVEL, ReadyReport
from isoplug.errors import TransportError
from isoplug.host.commands import RESTART, STOP, Commands
from isoplug.host.config import SupervisorConfig
from isoplug.host.config_change import apply_config
from isoplug.host.control_link import CapabilityInvoker, ControlLink
from isoplug.host.descriptor_room import claim_room_to_start, short_of_descriptors
from isoplug.host.levels import LogLevels
from isoplug.host.life import Addresses, RunnerLife
from isoplug.host.live_settings import apply_log_levels
from isoplug.host.manifest import Manifest
from isoplug.host.offers import Offers
from isoplug.host.process import RunnerProcess
from isoplug.host.ready_report import MAX_FAILURE_CHARS, read_report
from isoplug.host.registry import RunnerPlan
from isoplug.host.restarts import Next, RestartDecider
from isoplug.host.runner_control import RunnerControl
from isoplug.host.shortage import shortage
from isoplug.host.status import (
    ExitAccount,
    PluginState,
    StateChange,
)
from isoplug.host.stdio_replay import StdioDestination
from isoplug.host.zygote import Zygote
from isoplug.log_guard import guarded_logger
from isoplug.loop_closed import outside_any_loop
from isoplug.rpc import Handler, Peer
from isoplug.transport.stream import PeerCredentials
from isoplug.wire.sanitize import clean_text

__all__ = ["RunnerSupervisor", "SupervisorConfig"]

_log = guarded_logger("isoplug.host")

Notify = Callable[[StateChange], None]
StdioDestinations = Callable[["RunnerSupervisor", int], StdioDestination]
"""``stdio_destination(supervisor, pid)``: where the stdout/stderr output of the runner process
``pid`` goes (in a Host, the log bridge's replayer for the runner)."""


class RunnerSupervisor(RunnerControl):
    """Supervises the runner of ``plan``; see the module docstring for the life cycle.

    ``addresses()`` says where a runner started now connects: the host's listener, and its log
    bridge's (see :mod:`isoplug.host.socket_folders`);
    ``invoke_capability(name, kwargs, plugin)`` runs a host capability (after this supervisor
    checked the calling plugin may use it); ``notify`` receives every
    :class:`~isoplug.host.status.StateChange`; ``stdio_destination`` says where each runner
    process's stdout/stderr output goes (default: a replayer of its own onto
    ``plugin.<runner id>.stdout`` / ``.stderr``); ``zygote`` forks its runner processes
    (None: each is spawned; see :mod:`isoplug.host.zygote`).
    """

    def __init__(
        self,
        plan: RunnerPlan,
        *,
        addresses: Addresses,
        config: SupervisorConfig,
        invoke_capability: CapabilityInvoker,
        notify: Notify,
        stdio_destination: StdioDestinations | None = None,
        zygote: Zygote | None = None,
    ) -> None:
        self.runner_id = plan.runner_id
        self._zygote = zygote
        self.manifests: dict[str, Manifest] = {m.id: m for m in plan.manifests}
        self._addresses = addresses
        self._config = config
        self._notify = notify
        self._stdio_destination = stdio_destination
        self.state = PluginState.STOPPED
        self.restarts = 0
        #: Events each plugin dropped in the runner processes that ended (see
        #: PluginInfo.events_dropped).
        self._events_dropped: dict[str, int] = {}
        self.last_exit: ExitAccount | None = None
        self.error: str | None = None
        #: Where setup() waited in the last runner killed for not being ready in time (""
        #: once one was ready): what a wait for readiness that times out quotes.
        self.setup_waited = ""
        #: Plugins that can never load (import failed): plugin id -> why.
        self.broken: dict[str, str] = {}
        #: What the current runner's plugins offer (empty until its ready report).
        self.offers = Offers()
        #: The current runner process, or the last one.
        self._life: RunnerLife | None = None
        self._commands = Commands()
        self.control = ControlLink(
            self.runner_id, self.manifests, invoke_capability, lambda: self._life
        )
        self._task: asyncio.Task[None] | None = None
        #: Set by aclose(): no runner is started any more.
        self._closed = False
        self._changed = asyncio.Event()
        #: How many runner processes this supervisor has started.
        self._generation = 0
        #: The last of them that was ready (0: none): whether a start failed before ready.
        self._ready_generation = 0
        #: Levels set at runtime, re-applied after a restart (and handed to the supervisor that
        #: replaces this one at a hot reload).
        self.log_levels = LogLevels(config.log_level)
        self._config_lock = asyncio.Lock()

    def log_level(self, plugin: str) -> int:
        """The level ``plugin`` runs at: see :mod:`isoplug.host.levels`."""
        return self.log_levels.level_of(self.manifests[plugin])

    async def set_log_level(self, level: int, *, plugin: str = "", logger: str = "") -> None:
        """Set the level of the whole ``plugin``, or of ``logger`` (``""``: the runner's root),
        in the runner, now (if it runs) and after every restart, so that disabled records cost
        nothing at the source (see :mod:`isoplug.host.levels`). A runner that ends before it
        answers (a stop, a restart, a crash) raises nothing: the level is kept, and the next
        runner starts with it."""
        if plugin:
            change = self.log_levels.set_plugin(plugin, level)
        else:
            change = self.log_levels.set_logger(logger, level)
        peer = self._peer
        if self.state is PluginState.READY and peer is not None and peer.is_open:
            try:
                await peer.request(SET_LOG_LEVEL, change)
            except TransportError as exc:
                _log.debug(
                    "runner %s ended before it took the new level (%s); its next start takes it",
                    self.runner_id,
                    clean_text(str(exc), MAX_FAILURE_CHARS),
                )

    async def set_config(
        self, plugin_id: str, config: Mapping[str, Any], *, cause: str = "set_config"
    ) -> bool:
        """Give ``plugin_id`` its whole new ``config`` (kept for every later start): live, when
        its runner is ready and the plugin has ``on_config`` (True); otherwise by restarting
        the runner with it (False; a stopped plugin only keeps it). Raises
        :class:`~isoplug.errors.ConfigInvalid` when the plugin's schema refuses it, in any
        state (the plugin then keeps the configuration it had): a ready runner checks it, else
        a process of its own (:mod:`isoplug.host.config_check`). ``cause``: what changed it,
        as the exit account of a runner restarted for it says."""
        # One at a time: a change checked while another is applied must not overtake it.
        async with self._config_lock:
            return await apply_config(self, plugin_id, config, self._config, cause)

    # -- connections from the runner ----------------------------------------------------------

    def control_handlers(self) -> Mapping[str, Handler]:
        return self.control.handlers()

    def admit_control(self, credentials: PeerCredentials | None) -> str | None:
        """Why a control connection whose token matched is refused (None: it is welcome)."""
        return self.control.refusal(credentials)

    async def serve_control(self, peer: Peer) -> None:
        """Own the control connection of the current runner until it closes."""
        await self.control.serve(peer)

    # -- supervision ----------------------------------------------------------------------------

    async def _supervise(self) -> None:
        decider = RestartDecider(next(iter(self.manifests.values())).restart)
        try:
            while True:
                account, permanent = await self._run_once_or_short()
                if self._life is not None and self._life.setup_waited:
                    self.setup_waited = self._life.setup_waited
                life = self._life
                ended_it = life is not None and life.ended_by_command
                # The host's own restart (a hot reload's) has words of its own: no request.
                asked = self._commands.words is None
                command, account = self._commands.take_naming(account, ended_it=ended_it)
                self.last_exit = account
                if command == STOP:
                    self._set_state(PluginState.STOPPED, f"stopped: {account.describe()}")
                    return
                if command == RESTART:
                    self.restarts += 1
                    said = (
                        f"restarting on request: {account.describe()}"
                        if asked
                        else f"restarting: {account.describe()}"
                    )
                    self._set_state(PluginState.STARTING, said)
                    continue
                recycled = None if self._life is None else self._life.recycled
                decision = decider.after_exit(
                    account,
                    permanent,
                    time.monotonic(),
                    recycled=recycled,
                    reached_ready=self._ready_generation == self._generation,
                )
                if decision.next is Next.FAIL:
                    self._fail(decision.message)
                    return
                if decision.next is Next.BACK_OFF:
                    self._set_state(PluginState.RESTARTING, decision.message, decision.level)
                    if await self._commands.wait(decision.delay) == STOP:
                        self._commands.take()
                        self._set_state(PluginState.STOPPED, "stopped while waiting to restart")
                        return
                    self._commands.take()
                    self.restarts += 1
                    self._set_state(PluginState.STARTING, f"restart #{self.restarts}")
                else:
                    self.restarts += 1
                    self._set_state(PluginState.STARTING, decision.message, decision.level)
        except (asyncio.CancelledError, KeyboardInterrupt):
            cut_short = None if self._life is None else self._life.cut_short
            if cut_short is not None:
                self.last_exit = cut_short
                self._set_state(
                    PluginState.STOPPED, f"stopped: {cut_short.describe()}", logging.WARNING
                )
            raise
        except Exception as error:
            if outside_any_loop():
                # Ended from outside, its loop closed under its host (isoplug.loop_closed):
                # the host's release said what was done.
                _log.debug(
                    "supervision of runner %s ended with its loop: %r", self.runner_id, error
                )
                return
            _log.exception("supervisor of runner %s failed", self.runner_id)
            self._fail("the supervisor itself failed (a bug in isoplug; see the log)")

    async def _run_once_or_short(self) -> tuple[ExitAccount, str | None]:
        """:meth:`_run_once`; a start the host lacked a resource for (descriptors, threads)
        is a runner that did not start, restarted with backoff as after a crash."""
        try:
            return await self._run_once()
        except (OSError, RuntimeError) as error:
            short = shortage(error)
            if short is None:
                raise
            _log.error("runner %s: cannot run it: %s", self.runner_id, short)
            return ExitAccount(self.runner_id, 0, 127, 0.0, self.restarts, short), None

    async def _run_once(self) -> tuple[ExitAccount, str | None]:
        """Run one runner process from spawn to exit; return its account and, when restarting
        cannot help, why."""
        entries = self.log_levels.manifests(
            [m for pid, m in self.manifests.items() if pid not in self.broken]
        )
        self._generation += 1
        try:
            claim = claim_room_to_start()
        except OSError as error:
            # Said as the shortage it is, not as the closed connection or unread pipes a start
            # without the room would end in (see isoplug.host.descriptor_room).
            self._life = None
            why = shortage(error) or str(error)
            return ExitAccount(self.runner_id, 0, 127, 0.0, self.restarts, why), None
        life = self._life = RunnerLife(self.runner_id, self._config, self._commands, self._zygote)
        # Once ready, its descriptors are open ones, counted as such by the next start's look.
        life.ready.add_done_callback(lambda _: claim.release())
        self.offers = Offers()
        try:
            account, permanent = await life.run(
                entries,
                addresses=self._addresses,
                open_stdio=self._open_stdio,
                restarts=self.restarts,
                on_ready=self._take_ready,
            )
        finally:
            claim.release()
            # Its runner process ended: the events it did not deliver join the counts of the
            # runners before it.
            for plugin_id, count in life.health.events.settle(self.runner_id).items():
                if plugin_id in self.manifests:
                    self._events_dropped[plugin_id] = self._events_dropped.get(plugin_id, 0) + count
        if account.exit_code == EXIT_CANNOT_CONNECT and not life.connected:
            # Something else took the descriptors the claim counted on: uvloop then closes the
            # control connection it cannot accept, unseen, and the runner only saw it closed.
            short = short_of_descriptors()
            if short is not None:
                reason = f"{account.reason}; {shortage(short)}"
                account = dataclasses.replace(account, reason=reason)
        return account, permanent

    async def _take_ready(
        self, report: ReadyReport, process: RunnerProcess
    ) -> tuple[bool, str | None]:
        """Take the ready report of ``process``; if it serves, apply the log levels and say it
        is READY. Returns whether it serves and, when restarting cannot help, why."""
        permanent = self._take_report(report, process)
        if not self.offers:
            return False, permanent
        self.setup_waited = ""
        self._ready_generation = self._generation
        if self._peer is not None:
            await apply_log_levels(self.runner_id, self.log_levels, self._peer)
        self._set_state(
            PluginState.READY,
            f"ready: runner {self.runner_id} (pid {process.pid}) in {process.uptime:.2f} s",
        )
        return True, None

    def _take_report(self, report: ReadyReport, process: RunnerProcess) -> str | None:
        reading = read_report(report)
        for plugin_id, text in reading.unloadable.items():
            self.broken[plugin_id] = text
            change = StateChange(
                self.runner_id,
                (plugin_id,),
                PluginState.FAILED,
                f"cannot be loaded: {text}",
                logging.ERROR,
                config_refused=plugin_id in reading.config_refused,
            )
            self._notify(change)
        for text in reading.setup_failures:
            self.error = text
            _log.error("runner %s (pid %d): %s", self.runner_id, process.pid, text)
        self.offers = reading.offers
        if self.offers:
            self.error = None
        if not report.loaded and len(self.broken) == len(self.manifests):
            return "none of its plugins can be loaded"
        return None

    # -- reporting ------------------------------------------------------------------------------

    def _set_state(self, state: PluginState, message: str, level: int = logging.INFO) -> None:
        self.state = state
        # The plugins it runs; a runner none of whose plugins could be loaded changes for
        # them all (its end completes their failure: a change names a plugin, always).
        ids = tuple(pid for pid in self.manifests if pid not in self.broken) or tuple(
            self.manifests
        )
        self._notify(StateChange(self.runner_id, ids, state, message, level))
        self._changed.set()
        self._changed = asyncio.Event()

    def _fail(self, message: str) -> None:
        self.error = message if self.error is None else f"{message}\nlast error: {self.error}"
        self._set_state(PluginState.FAILED, f"failed: {message}", logging.ERROR)

    def _open_stdio(self, pid: int) -> StdioDestination:
        """Where the stdout/stderr output of runner process ``pid`` goes (read and replayed by
        threads: the event loop never runs a logging handler for it)."""
        if self._stdio_destination is not None:
            return self._stdio_destination(self, pid)
        return StdioDestination.plain(self.runner_id, pid)
