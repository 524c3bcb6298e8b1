"""One supervisor per runner: start it, watch it, restart it, stop it, account for every exit.

Life of a runner, as driven by :meth:`RunnerSupervisor._supervise`::

    STARTING --ready report--> READY --exit / hung / not ready in time--> RESTARTING --backoff-->
    STARTING ...   more than max_restarts crashes within the window --> FAILED
    any state --stop()--> STOPPED      FAILED/STOPPED --restart()--> STARTING

- *Start*: ``sys.executable -m isoplug.runner`` in a new session, with a fresh random token per
  process (so a connection proves which process it comes from), bootstrap on stdin.
- *Ready*: the runner's ready report must arrive within ``ready_timeout``. Plugins that failed
  to import are marked FAILED for good (restarting cannot fix code); a failed ``setup`` counts
  as a crash.
- *Health*: every ``health_interval`` a ping must be answered within ``health_timeout``, else
  the runner is hung (typically a plugin blocking its event loop) and is killed.
- *Stop*: ask (``runner.shutdown``) and wait ``shutdown_timeout``; then SIGTERM to the process
  group and wait ``terminate_timeout``; then SIGKILL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from isoplug.control import (
    CAPABILITY,
    EVENT,
    EXIT_BAD_BOOTSTRAP,
    EXIT_NOTHING_LOADED,
    PING,
    READY,
    SET_LOG_LEVEL,
    SHUTDOWN,
    CapabilityDenied,
    CapabilityRequest,
    EventDelivery,
    LoadStage,
    LogLevelChange,
    PluginSummary,
    ReadyReport,
)
from isoplug.errors import (
    ConnectionBroken,
    ConnectionClosed,
    IsoplugError,
    MethodNotFound,
    RequestTimeout,
)
from isoplug.host.calls import call_plugin
from isoplug.host.config import SupervisorConfig
from isoplug.host.launch import launch_runner
from isoplug.host.manifest import Manifest
from isoplug.host.process import RunnerProcess
from isoplug.host.registry import RunnerPlan
from isoplug.host.status import (
    ExitAccount,
    PluginInfo,
    PluginState,
    PluginUnavailable,
    StateChange,
)
from isoplug.host.stdio import StdioDestination
from isoplug.logs import LogReplayer
from isoplug.rpc import Handler, Peer

__all__ = ["RunnerSupervisor", "SupervisorConfig"]

_log = logging.getLogger("isoplug.host")


CapabilityInvoker = Callable[[str, dict[str, Any]], Awaitable[Any]]
Notify = Callable[[StateChange], None]
StdioDestinations = Callable[["RunnerSupervisor", int], StdioDestination]
"""``stdio_destination(supervisor, pid)``: where the stdout/stderr output of the runner process
``pid`` goes (in a Host, the log bridge's replayer for the runner)."""

#: After a call lost its connection, how long to wait for the runner's exit status so that
#: the caller's error can say how it died; the kernel reports an exit within milliseconds.
_CRASH_ACCOUNT_WAIT = 1.0

_STOP = "stop"
_RESTART = "restart"


class RunnerSupervisor:
    """Supervises the runner of ``plan``; see the module docstring for the life cycle.

    ``address`` is the host's listener, ``log_address`` its log bridge's;
    ``invoke_capability(name, kwargs)`` runs a host capability (after this supervisor checked
    the calling plugin may use it); ``notify`` receives every
    :class:`~isoplug.host.status.StateChange`; ``stdio_destination`` says where each runner
    process's stdout/stderr output goes (default: a replayer of its own onto
    ``plugin.<runner id>.stdout`` / ``.stderr``).
    """

    def __init__(
        self,
        plan: RunnerPlan,
        *,
        address: str,
        log_address: str,
        config: SupervisorConfig,
        invoke_capability: CapabilityInvoker,
        notify: Notify,
        stdio_destination: StdioDestinations | None = None,
    ) -> None:
        self.runner_id = plan.runner_id
        self.manifests: dict[str, Manifest] = {m.id: m for m in plan.manifests}
        self._address = address
        self._log_address = log_address
        self._config = config
        self._invoke_capability = invoke_capability
        self._notify = notify
        self._stdio_destination = stdio_destination
        self.state = PluginState.STOPPED
        self.restarts = 0
        self.last_exit: ExitAccount | None = None
        self.error: str | None = None
        #: Plugins that can never load (import failed): plugin id -> why.
        self.broken: dict[str, str] = {}
        self.summaries: dict[str, PluginSummary] = {}
        self._token: str | None = None
        self._process: RunnerProcess | None = None
        self._peer: Peer | None = None
        self._ready: asyncio.Future[ReadyReport] | None = None
        self._command: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        #: How many runner processes this supervisor has started.
        self._generation = 0
        #: Levels set at runtime (runner logger name -> level), re-applied after a restart.
        self._log_levels: dict[str, int] = {}

    # -- public -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start supervising (a no-op if already supervising)."""
        if self._task is not None and not self._task.done():
            return
        self._command = None
        self._wake.clear()
        self._set_state(PluginState.STARTING, f"starting runner {self.runner_id}")
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"isoplug-supervisor:{self.runner_id}"
        )

    async def stop(self) -> None:
        """Stop the runner gracefully (shutdown request, SIGTERM, SIGKILL) and wait for it."""
        task = self._task
        if task is None or task.done():
            if self.state is not PluginState.FAILED:
                self._set_state(PluginState.STOPPED, f"runner {self.runner_id} stopped")
            return
        self._command = _STOP
        self._wake.set()
        await asyncio.shield(task)

    async def restart(self) -> None:
        """Replace the runner with a fresh one (also from FAILED or STOPPED); wait for it.

        Returns when the new runner is ready, or failed again.
        """
        generation = self._generation
        if self._task is None or self._task.done():
            self.broken.clear()
            self.error = None
            self.start()
        else:
            self._command = _RESTART
            self._wake.set()
        await self._wait_settled(after_generation=generation)

    def kill_now(self) -> None:
        """Last resort (host cancelled mid-shutdown): SIGKILL the runner's group at once."""
        if self._process is not None:
            self._process.signal_group(signal.SIGKILL)

    async def aclose(self) -> None:
        """Stop, and make sure the supervising task has ended. Idempotent."""
        await self.stop()

    @property
    def pid(self) -> int | None:
        """The pid of the current runner process, if one runs."""
        return None if self._process is None else self._process.pid

    async def set_log_level(self, logger: str, level: int) -> None:
        """Set ``logger`` (``""``: the runner's root) to ``level`` in the runner, now (if it
        runs) and after every restart, so that disabled records cost nothing at the source."""
        self._log_levels[logger] = level
        peer = self._peer
        if self.state is PluginState.READY and peer is not None and peer.is_open:
            await peer.request(SET_LOG_LEVEL, LogLevelChange(logger=logger, level=level))

    async def _apply_log_levels(self) -> None:
        peer = self._peer
        for logger, level in self._log_levels.items():
            if peer is None or not peer.is_open:
                return
            try:
                await peer.request(SET_LOG_LEVEL, LogLevelChange(logger=logger, level=level))
            except IsoplugError as exc:
                _log.warning(
                    "runner %s: could not set the level of logger %r: %s",
                    self.runner_id,
                    logger,
                    exc,
                )

    def expected_token(self) -> str | None:
        """The token the current runner process must present (None while none is starting)."""
        return self._token

    def info(self, plugin_id: str) -> PluginInfo:
        summary = self.summaries.get(plugin_id, PluginSummary())
        broken = self.broken.get(plugin_id)
        process = self._process
        return PluginInfo(
            id=plugin_id,
            runner_id=self.runner_id,
            state=PluginState.FAILED if broken else self.state,
            pid=process.pid if process is not None and process.running else None,
            restarts=self.restarts,
            last_exit=self.last_exit,
            error=broken or self.error,
            methods=summary.methods,
            events=summary.events,
        )

    # -- connections from the runner ----------------------------------------------------------

    def control_handlers(self) -> Mapping[str, Handler]:
        return {READY: self._on_ready, CAPABILITY: self._on_capability}

    async def serve_control(self, peer: Peer) -> None:
        """Own the control connection of the current runner until it closes."""
        process = self._process
        credentials = peer.stream.peer_credentials
        if process is None or self._peer is not None:
            _log.warning(
                "runner %s: refused an unexpected second control connection", self.runner_id
            )
            return
        if credentials is not None and credentials.pid != process.pid:
            _log.warning(
                "runner %s: refused a control connection from pid %d (the runner is pid %d)",
                self.runner_id,
                credentials.pid,
                process.pid,
            )
            return
        self._peer = peer
        try:
            await peer.wait_closed()
        finally:
            if self._peer is peer:
                self._peer = None

    def _on_ready(self, params: Any) -> None:
        report = msgspec.convert(params, ReadyReport)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(report)

    async def _on_capability(self, params: Any) -> Any:
        request = msgspec.convert(params, CapabilityRequest)
        manifest = self.manifests.get(request.plugin)
        # Never trust the runner: check the grant here, whatever the runner checked.
        if manifest is None:
            raise CapabilityDenied(f"runner {self.runner_id!r} has no plugin {request.plugin!r}")
        if request.name not in manifest.capabilities:
            raise CapabilityDenied(
                f"plugin {request.plugin!r} may not call host capability {request.name!r}: "
                f"not in 'capabilities' of {manifest.path}"
            )
        return await self._invoke_capability(request.name, request.kwargs)

    # -- calls and events ---------------------------------------------------------------------

    async def call(
        self, plugin_id: str, method: str, kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        """Call ``method`` of ``plugin_id``; see :meth:`isoplug.Host.call` for what it raises."""
        deadline = None if timeout is None else time.monotonic() + timeout
        await self._wait_ready_for_call(plugin_id, method, timeout)
        summary = self.summaries.get(plugin_id, PluginSummary())
        if method not in summary.methods:
            raise MethodNotFound(
                f"{plugin_id}.{method}",
                "isoplug.errors.MethodNotFound",
                f"plugin {plugin_id!r} has no method {method!r}; available methods: "
                f"{', '.join(summary.methods) or 'none'}",
            )
        peer, process = self._peer, self._process
        if peer is None or process is None:
            raise PluginUnavailable(f"plugin {plugin_id!r} lost its runner just now")
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return await call_plugin(peer, plugin_id, method, kwargs, remaining)
        except ConnectionBroken as exc:
            if self._command is not None:
                raise PluginUnavailable(
                    f"plugin {plugin_id!r} was {_command_reason(self._command)} during {method!r}"
                ) from exc
            # Most likely the runner died mid-call: say how, if it is known within a moment.
            await process.wait_exit(_CRASH_ACCOUNT_WAIT)
            raise ConnectionBroken(
                f"plugin {plugin_id!r} crashed during {method!r}: its runner (pid "
                f"{process.pid}) {_how_it_ended(process)}"
            ) from exc

    def publish(self, event: str, payload: Any) -> bool:
        """Send ``event`` if a plugin of this runner subscribes to it; True if sent."""
        peer = self._peer
        if self.state is not PluginState.READY or peer is None or not peer.is_open:
            return False
        if not any(event in s.events for s in self.summaries.values()):
            return False
        try:
            peer.notify_nowait(EVENT, EventDelivery(event=event, payload=payload))
        except (ConnectionClosed, ConnectionBroken):
            return False
        return True

    async def _wait_ready_for_call(
        self, plugin_id: str, method: str, timeout: float | None
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    info = self.info(plugin_id)
                    if info.state is PluginState.READY and self._peer is not None:
                        return
                    if info.state in (PluginState.FAILED, PluginState.STOPPED):
                        raise PluginUnavailable(
                            f"cannot call {plugin_id}.{method}: the plugin is "
                            f"{info.state.value}" + (f": {info.error}" if info.error else "")
                        )
                    changed = self._changed
                    await changed.wait()
        except TimeoutError:
            raise PluginUnavailable(
                f"cannot call {plugin_id}.{method}: the plugin was not ready within "
                f"{timeout:g} s (state: {self.state.value})"
            ) from None

    async def _wait_settled(self, after_generation: int) -> None:
        """Wait until a runner newer than ``after_generation`` has settled (or supervision
        ended)."""
        settled = (PluginState.READY, PluginState.FAILED, PluginState.STOPPED)
        while self._generation <= after_generation or self.state not in settled:
            if self._task is None or self._task.done():
                return
            changed = self._changed
            await changed.wait()

    # -- supervision ----------------------------------------------------------------------------

    async def _supervise(self) -> None:
        policy = next(iter(self.manifests.values())).restart
        crashes: collections.deque[float] = collections.deque()
        try:
            while True:
                account, permanent = await self._run_once()
                self.last_exit = account
                command, self._command = self._command, None
                self._wake.clear()
                if command == _STOP:
                    self._set_state(PluginState.STOPPED, f"stopped: {account.describe()}")
                    return
                if command == _RESTART:
                    self.restarts += 1
                    self._set_state(
                        PluginState.STARTING, f"restarting on request: {account.describe()}"
                    )
                    continue
                if permanent is not None:
                    self._fail(f"{account.describe()}; {permanent}")
                    return
                if policy.policy == "never":
                    self._fail(f"{account.describe()}; restart policy is 'never'")
                    return
                now = time.monotonic()
                crashes.append(now)
                while crashes and crashes[0] < now - policy.window:
                    crashes.popleft()
                if len(crashes) > policy.max_restarts:
                    self._fail(
                        f"{account.describe()}; crash loop: {len(crashes)} crashes within "
                        f"{policy.window:g} s (limit {policy.max_restarts}), giving up"
                    )
                    return
                delay = policy.delay(len(crashes))
                self._set_state(
                    PluginState.RESTARTING,
                    f"crashed: {account.describe()}; restarting in {delay:.2g} s",
                    logging.WARNING,
                )
                if await self._wait_command(delay) == _STOP:
                    self._command = None
                    self._set_state(PluginState.STOPPED, "stopped while waiting to restart")
                    return
                self._command = None
                self._wake.clear()
                self.restarts += 1
                self._set_state(PluginState.STARTING, f"restart #{self.restarts}")
        except Exception:
            _log.exception("supervisor of runner %s failed", self.runner_id)
            self._fail("the supervisor itself failed (a bug in isoplug; see the log)")

    async def _wait_command(self, timeout: float | None) -> str | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        return self._command

    async def _run_once(self) -> tuple[ExitAccount, str | None]:
        """Run one runner process from spawn to exit; return its account and, when restarting
        cannot help, why."""
        entries = [m for pid, m in self.manifests.items() if pid not in self.broken]
        self._generation += 1
        self._token = secrets.token_urlsafe(32)
        self._ready = asyncio.get_running_loop().create_future()
        self.summaries = {}
        try:
            process = await launch_runner(
                self.runner_id,
                entries,
                address=self._address,
                log_address=self._log_address,
                token=self._token,
                log_level=self._config.log_level,
                teardown_timeout=self._config.teardown_timeout,
                open_stdio=self._open_stdio,
                # Noted before the runner can read its bootstrap: its connections (control and
                # logs) always find its pid known.
                spawned=self._note_process,
            )
        except OSError as exc:
            self._process = None  # killed by the launch, if it got as far as spawning
            self._token = None
            account = ExitAccount(
                self.runner_id, 0, 127, 0.0, self.restarts, f"could not start: {exc}"
            )
            return account, None
        except BaseException:
            self._process = None  # cancelled: killed by the launch
            raise
        reason = ""
        permanent: str | None = None
        try:
            reason, permanent = await self._until_exit(process)
        except BaseException:
            # Cancelled (host shutting down hard) or a bug: never leave the process behind.
            process.signal_group(signal.SIGKILL)
            raise
        finally:
            self._token = None
            if self._peer is not None:
                with contextlib.suppress(IsoplugError):
                    await self._peer.aclose("runner is gone")
            if await process.close():
                _log.warning(
                    "runner %s: processes forked by its plugins outlived it; killed them",
                    self.runner_id,
                )
            self._process = None
        returncode = process.exited.result()
        if returncode == EXIT_BAD_BOOTSTRAP:
            permanent = "the runner could not read its bootstrap (an isoplug bug)"
        elif returncode == EXIT_NOTHING_LOADED and permanent is None:
            permanent = "no plugin could be loaded"
        account = ExitAccount(
            self.runner_id, process.pid, returncode, process.uptime, self.restarts, reason
        )
        return account, permanent

    def _note_process(self, process: RunnerProcess) -> None:
        self._process = process

    async def _until_exit(self, process: RunnerProcess) -> tuple[str, str | None]:
        """Drive one process until it has exited; return (why it ended, permanent failure)."""
        assert self._ready is not None
        config = self._config
        ready = self._ready
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            watched: set[asyncio.Future[Any]] = {ready, process.exited, waiter}
            done, _ = await asyncio.wait(
                watched,
                timeout=config.ready_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
        if self._command is not None:
            await self._shut_down(process)
            return _command_reason(self._command), None
        if process.exited.done() and not ready.done():
            return "it exited before reporting ready", None
        if not done:
            await self._kill(process)
            return f"killed by the host: not ready within {config.ready_timeout:g} s", None
        report = ready.result()
        permanent = self._take_report(report, process)
        if not self.summaries:
            # Setup failed or nothing imported: the runner exits on its own.
            if not await process.wait_exit(config.shutdown_timeout):
                await self._kill(process)
            return "", permanent
        await self._apply_log_levels()
        self._set_state(
            PluginState.READY,
            f"ready: runner {self.runner_id} (pid {process.pid}) in {process.uptime:.2f} s",
        )
        return await self._watch(process), None

    def _take_report(self, report: ReadyReport, process: RunnerProcess) -> str | None:
        for failure in report.failures:
            text = failure.message + (
                f"\n{failure.traceback.rstrip()}" if failure.traceback else ""
            )
            if failure.stage == LoadStage.IMPORT:
                self.broken[failure.plugin_id] = text
                self._notify(
                    StateChange(
                        self.runner_id,
                        (failure.plugin_id,),
                        PluginState.FAILED,
                        f"cannot be loaded: {text}",
                        logging.ERROR,
                    )
                )
            else:
                self.error = text
                _log.error("runner %s (pid %d): %s", self.runner_id, process.pid, text)
        self.summaries = (
            {} if any(f.stage == LoadStage.SETUP for f in report.failures) else dict(report.loaded)
        )
        if self.summaries:
            self.error = None
        if not report.loaded and len(self.broken) == len(self.manifests):
            return "none of its plugins can be loaded"
        return None

    async def _watch(self, process: RunnerProcess) -> str:
        """Health-check a ready runner until it exits; return why it ended."""
        config = self._config
        while True:
            command = await self._wait_exit_or_command(process, config.health_interval)
            if not process.running:
                return ""
            if command is not None:
                await self._shut_down(process)
                return _command_reason(command)
            peer = self._peer
            try:
                if peer is None:
                    raise ConnectionClosed("no control connection")
                if not await self._ping(peer, process):
                    continue  # a command or the exit came first: handled at the loop's top
            except RequestTimeout:
                _log.error(
                    "runner %s (pid %d) did not answer a health check within %g s: it is hung "
                    "(a plugin blocking its event loop?); killing it",
                    self.runner_id,
                    process.pid,
                    config.health_timeout,
                )
                await self._kill(process)
                return (
                    f"killed by the host: no answer to a health check within "
                    f"{config.health_timeout:g} s (hung)"
                )
            except (ConnectionClosed, ConnectionBroken):
                if await process.wait_exit(config.health_timeout):
                    return ""
                await self._kill(process)
                return "killed by the host: it closed its connection but did not exit"

    async def _ping(self, peer: Peer, process: RunnerProcess) -> bool:
        """One health check; False if a command or the runner's exit interrupted it.

        Raises :class:`RequestTimeout` when the runner did not answer in time.
        """
        ping = asyncio.ensure_future(peer.request(PING, timeout=self._config.health_timeout))
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            watched: set[asyncio.Future[Any]] = {ping, process.exited, waiter}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not ping.done():
                ping.cancel()
                await asyncio.gather(ping, return_exceptions=True)
        if ping.cancelled():
            return False
        ping.result()
        return True

    async def _wait_exit_or_command(self, process: RunnerProcess, timeout: float) -> str | None:
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            watched: set[asyncio.Future[Any]] = {process.exited, waiter}
            await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return self._command

    async def _shut_down(self, process: RunnerProcess) -> None:
        """Ask, then SIGTERM, then SIGKILL; returns once the runner has exited."""
        peer = self._peer

        async def ask() -> None:
            if peer is not None:
                with contextlib.suppress(IsoplugError):
                    await peer.request(SHUTDOWN, timeout=self._config.shutdown_timeout)

        await process.stop(
            ask if peer is not None else None,
            shutdown_timeout=self._config.shutdown_timeout,
            terminate_timeout=self._config.terminate_timeout,
            name=self.runner_id,
        )

    async def _kill(self, process: RunnerProcess) -> None:
        process.signal_group(signal.SIGKILL)
        await process.wait_exit(None)

    # -- reporting ------------------------------------------------------------------------------

    def _set_state(self, state: PluginState, message: str, level: int = logging.INFO) -> None:
        self.state = state
        ids = tuple(pid for pid in self.manifests if pid not in self.broken)
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
        prefix = f"plugin.{self.runner_id}"
        replayer = LogReplayer(
            prefix,
            identity={"plugin_id": self.runner_id, "runner_pid": pid},
            description=f"plugin {self.runner_id}",
        )
        return StdioDestination(replayer)


def _command_reason(command: str) -> str:
    return "stopped on request" if command == _STOP else "restarted on request"


def _how_it_ended(process: RunnerProcess) -> str:
    if not process.exited.done():
        return "lost its connection"
    returncode = process.exited.result()
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"
