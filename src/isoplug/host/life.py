"""One life of a runner: one runner process, from spawn to exit, driven for its supervisor.

- *Start*: ``sys.executable -m isoplug.runner`` in a process group of its own, with fresh random
  tokens per process (one for its control connection, one for its log connections), bootstrap
  on stdin.
- *Ready*: the runner's ready report must arrive within ``ready_timeout``; the supervisor then
  takes it (which plugins loaded, which failed and how).
- *Health*: every ``health_interval`` the runner's health thread is asked how its event loop
  and worker threads are; a loop blocked for ``health_timeout`` (more while the GIL is held,
  up to ``health_grace``) means hung: the runner is killed; too many threads stuck in calls
  that timed out mean it is recycled (see :mod:`isoplug.host.health`).
- *Limits*: a runner with ``memory``, ``recycle_rss`` or ``cpu_seconds`` in its ``[limits]``
  has its RSS and CPU time watched from its spawn: killed past ``memory``, recycled above
  ``recycle_rss`` (see :mod:`isoplug.host.limits`); its exit account names the limit.
- *Stop*: ask (``runner.shutdown``) and wait ``shutdown_timeout``; then SIGTERM to the process
  group and wait ``terminate_timeout``; then SIGKILL.

Its exit account is made from what the life saw (:mod:`isoplug.host.exit_account`). A stop or
restart command (:mod:`isoplug.host.commands`) ends a life at any of these steps. What
happens across lives (states, restarts, the restart policy) is the supervisor's
(:mod:`isoplug.host.supervisor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Sequence

from isoplug.control import SHUTDOWN, ReadyReport, ResourceLimits
from isoplug.errors import IsoplugError, TransportError
from isoplug.host.commands import Commands
from isoplug.host.config import SupervisorConfig
from isoplug.host.exit_account import NOT_READY_WITHIN, account_for_exit
from isoplug.host.exit_verdict import BEFORE_READY
from isoplug.host.graceful_stop import stop_gracefully
from isoplug.host.health import Finding, HealthWatch, health_tick
from isoplug.host.interpreter_check import (
    UNRUNNABLE,
    interpreter_problem,
    problem_after_import_failure,
)
from isoplug.host.launch import CannotLaunch, launch_runner
from isoplug.host.limits import LimitWatch
from isoplug.host.manifest import Manifest
from isoplug.host.process import KILL_RETRY, OpenStdio, RunnerProcess
from isoplug.host.registry import runner_limits
from isoplug.host.restarts import RECYCLE_RSS, STUCK_THREADS
from isoplug.host.setup_where import setup_where
from isoplug.host.shortage import shortage
from isoplug.host.status import KILLED_BY_HOST, ExitAccount
from isoplug.host.stderr_tail import StderrTail
from isoplug.host.stdio_replay import StdioDestination
from isoplug.host.zygote import Zygote
from isoplug.log_guard import guarded_logger
from isoplug.rpc import Peer
from isoplug.wire.sanitize import clean_path

__all__ = ["CUT_SHORT", "Addresses", "OnReady", "RunnerLife"]

_log = guarded_logger("isoplug.host")

#: Why the host killed a runner whose supervision was cancelled.
CUT_SHORT = "the host was cut short (its event loop ending, or its shutdown cancelled)"

Addresses = Callable[[], Awaitable[tuple[str, str]]]
"""``await addresses()``: the host's listener and its log bridge's, where a runner started now
connects (see :mod:`isoplug.host.socket_folders`)."""
OnReady = Callable[[ReadyReport, RunnerProcess], Awaitable[tuple[bool, str | None]]]
"""``on_ready(report, process)``: the supervisor takes the ready report of ``process``; returns
whether the runner serves (a plugin loaded and set up) and, when restarting cannot help, why."""


class RunnerLife:
    """One runner process of the runner ``runner_id``; run it once, with :meth:`run`.

    What the supervisor reads of it: ``token`` and ``log_token``, the tokens its control and
    log connections must present (None before its spawn and after its exit); ``ready``, which
    the supervisor's control handler resolves with the ready report; ``process``, from its
    spawn until it has been closed; ``peer``, its control connection while the supervisor
    serves it (the supervisor sets it); ``recycled``, what the host recycled it for (None: it
    was not recycled), once its life is over.
    """

    def __init__(
        self,
        runner_id: str,
        config: SupervisorConfig,
        commands: Commands,
        zygote: Zygote | None = None,
    ) -> None:
        self.runner_id = runner_id
        self._zygote = zygote
        self._config = config
        self._commands = commands
        self.token: str | None = None
        self.log_token: str | None = None
        self.ready: asyncio.Future[ReadyReport] = asyncio.get_running_loop().create_future()
        self.process: RunnerProcess | None = None
        self.peer: Peer | None = None
        #: Its health checks, over a channel of their own (see isoplug.host.health).
        self.health = HealthWatch(runner_id, config)
        #: Its [limits] that the host enforces (see isoplug.host.limits); set by run().
        self.limits = LimitWatch(runner_id, ResourceLimits())
        self.recycled: str | None = None
        #: Its exit account when its supervision was cancelled (:data:`CUT_SHORT`).
        self.cut_short: ExitAccount | None = None
        #: Plugin calls sent to it and not yet answered (see :meth:`calling`).
        self._calls = 0
        #: Set once no call is in flight, while a recycle waits for that (see _until_idle):
        #: a future made then, not an Event set and cleared around every call.
        self._idle: asyncio.Future[None] | None = None
        #: The last lines it wrote on stderr, through its pipe or its log connections (the log
        #: bridge feeds those: see isoplug.host.stderr_tail).
        self.stderr_tail = StderrTail()
        #: Why the host refused a control connection that had this runner's token (set by
        #: :mod:`isoplug.host.control_link`); quoted when the runner exits before ready.
        self.refused: str | None = None
        #: Why no start of this runner can connect (see isoplug.host.runner_versions).
        self.refused_for_good: str | None = None
        #: Whether the current process's control connection authenticated (set by
        #: :mod:`isoplug.host.control_link`): it had read its bootstrap.
        self.connected = False
        #: Where its plugins' setup() waited when it was killed for not being ready in time,
        #: as it said (see isoplug.host.setup_where); "" if it was not, or did not say.
        self.setup_waited = ""
        #: The host began ending it (a stop, a restart, a recycle): see ExitAccount.during_stop.
        self.stopping = False
        #: A stop or restart command ended it (or kept it from starting): its account's reason
        #: starts with the words of the command taken after its exit (see Commands.take_naming).
        self.ended_by_command = False

    def call_started(self) -> None:
        """A plugin call to this runner was sent; :meth:`call_ended` must follow, whatever
        happens (a recycle for its RSS waits for the calls in flight: see :meth:`_recycle`).
        Two methods, not a context manager: that cost a microsecond per call."""
        self._calls += 1

    def call_ended(self) -> None:
        """A call that :meth:`call_started` counted is over."""
        self._calls -= 1
        if self._calls == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def recycling(self) -> str | None:
        """Why the host recycles this runner (the reason its exit account will give), from
        the moment it decided to; None while it does not."""
        if self.limits.hit == "memory":
            return None  # killed at its memory limit, recycle decided or not: a crash
        for decided in (self.health.recycle, self.limits.recycle):
            if decided.done():
                return decided.result()
        return None

    async def run(
        self,
        entries: Sequence[Manifest],
        *,
        addresses: Addresses,
        open_stdio: OpenStdio,
        restarts: int,
        on_ready: OnReady,
    ) -> tuple[ExitAccount, str | None]:
        """Run the runner of ``entries`` from spawn to exit; return its account (``restarts``:
        how many times the runner had been restarted before) and, when restarting cannot help,
        why."""
        problem = await interpreter_problem(entries, self._config, self._commands)
        if problem is not None or self._commands.pending is not None:
            self.health.close()
            if problem is None:
                # Its words are the command's that wins, named when it is taken.
                self.ended_by_command = True
                return ExitAccount(self.runner_id, 0, 0, 0.0, restarts), None
            return ExitAccount(self.runner_id, 0, 127, 0.0, restarts, problem), UNRUNNABLE
        try:
            address, log_address = await addresses()
        except TransportError as exc:
            # Its folder deleted and no new one made ($TMPDIR gone, no descriptor left): a
            # runner that did not start, retried with backoff as after a crash.
            self.health.close()
            why = f"the host cannot listen for its connections: {clean_path(exc, 2000)}"
            return ExitAccount(self.runner_id, 0, 127, 0.0, restarts, why), None
        self.token = token = secrets.token_urlsafe(32)
        self.log_token = log_token = secrets.token_urlsafe(32)
        self.limits = LimitWatch(self.runner_id, runner_limits(entries))
        tail = self.stderr_tail

        def opened(pid: int) -> StdioDestination:
            return dataclasses.replace(open_stdio(pid), stderr_tail=tail)

        try:
            process = await launch_runner(
                self.runner_id,
                entries,
                address=address,
                log_address=log_address,
                token=token,
                log_token=log_token,
                teardown_timeout=self._config.teardown_timeout,
                open_stdio=opened,
                # Noted before the runner can read its bootstrap: its connections (control and
                # logs) always find its pid known.
                spawned=self._note_process,
                health_fd=self.health.runner_fd,
                health_tick=health_tick(self._config),
                max_stuck_threads=self._config.max_stuck_threads,
                nice=self._config.runner_nice,
                zygote=self._zygote,
                inherit_environment=self._config.inherit_environment,
                flow=(
                    self._config.max_concurrent_calls,
                    self._config.max_queued_calls,
                    self._config.max_queued_events,
                    self._config.max_queued_event_bytes,
                ),
            )
        except OSError as exc:
            self.health.close()
            self.process = None  # killed by the launch, if it got as far as spawning
            self.token = self.log_token = None
            account = ExitAccount(self.runner_id, 0, 127, 0.0, restarts, shortage(exc) or str(exc))
            return account, "not retried" if isinstance(exc, CannotLaunch) else None
        except BaseException:
            self.process = None  # cancelled: killed by the launch
            self.health.close()
            raise
        reason = ""
        permanent: str | None = None
        cancelled: asyncio.CancelledError | KeyboardInterrupt | None = None
        try:
            self.limits.start(process)
            await self.health.start(process.pid, process.reading_output)
            reason, permanent = await self._until_exit(process, on_ready)
        except (asyncio.CancelledError, KeyboardInterrupt) as exc:
            # The host's loop ending under it (asyncio.run cancels every task after a second
            # Ctrl-C, which raises KeyboardInterrupt wherever the loop was) or its shutdown
            # cancelled: killed at once, and accounted for as any exit once the exit is seen
            # (cancelled again meanwhile, it is not).
            process.kill(CUT_SHORT)
            if not await process.wait_exit(KILL_RETRY):
                raise
            cancelled = exc
        except BaseException:
            # A bug: never leave the process behind.
            process.kill("its supervision failed")
            raise
        finally:
            self.token = self.log_token = None
            self.health.close()
            await self.limits.close()
            if self.peer is not None:
                with contextlib.suppress(IsoplugError):
                    await self.peer.aclose("runner is gone")
            ready = self.ready
            report = ready.result() if ready.done() and not ready.cancelled() else None
            leftovers = await process.close(
                self._config.stdio_drain_timeout,
                inherited=None if report is None else report.inherited,
            )
            if leftovers:
                _log.warning("runner %s: %s", self.runner_id, leftovers.account())
            self.process = None
        account, permanent = await account_for_exit(
            process,
            reason,
            permanent,
            runner_id=self.runner_id,
            restarts=restarts,
            entries=entries,
            report=report,
            tail=tail,
            refused=self.refused,
            refused_for_good=self.refused_for_good,
            connected=self.connected,
            limits=self.limits,
            recheck=lambda said: problem_after_import_failure(
                entries, self._config, self._commands, said
            ),
            during_stop=self.stopping or self._commands.pending is not None,
            by_command=self.ended_by_command,
        )
        if cancelled is not None:
            self.cut_short = account
            raise cancelled
        return account, permanent

    def _note_process(self, process: RunnerProcess) -> None:
        self.process = process

    async def _until_exit(
        self, process: RunnerProcess, on_ready: OnReady
    ) -> tuple[str, str | None]:
        """Drive one process until it has exited; return (why it ended, permanent failure)."""
        config = self._config
        ready = self.ready
        done = await self._commands.wait_with((ready, process.exited), config.ready_timeout)
        if self._commands.pending is not None:
            return await self._end_by_command(process), None
        if process.exited.done() and not ready.done():
            return BEFORE_READY, None
        if not done:
            why = f"{NOT_READY_WITHIN}{config.ready_timeout:g} s"
            where = await setup_where(self.peer)
            if where:
                why = f"{why} ({where})"
                self.setup_waited = where
            await self._kill(process, why)
            return f"{KILLED_BY_HOST}{why}", None
        serving, permanent = await on_ready(ready.result(), process)
        if not serving:
            # Setup failed or nothing imported: the runner exits on its own. Or the host
            # refused what it loaded (a plugin declaring more than the host accepts): the
            # runner serves until told to stop. Asked either way (the deadline runs from the
            # request, as any stop's): one that is on its way out just exits.
            await self._shut_down(process)
            return "", permanent
        return await self._watch(process), None

    async def _watch(self, process: RunnerProcess) -> str:
        """Health-check a ready runner until it exits; return why it ended."""
        config = self._config
        health = self.health
        delay = config.health_interval
        while True:
            recycle = self.limits.recycle
            await self._commands.wait_with((process.exited, health.recycle, recycle), delay)
            command = self._commands.pending
            if not process.running:
                return ""
            if command is not None:
                return await self._end_by_command(process)
            if health.recycle.done():
                return await self._recycle(process, STUCK_THREADS, health.recycle.result())
            if recycle.done():
                return await self._recycle(process, RECYCLE_RSS, recycle.result())
            if self.peer is None or not self.peer.is_open:
                return await self._lost(process, "it closed its connection but did not exit")
            finding = await self._check(process)
            if finding is None:
                continue  # a command or the exit came first: handled at the loop's top
            if finding.lost is not None:
                return await self._lost(
                    process, f"its health channel failed ({finding.lost}) but it did not exit"
                )
            if finding.kill is not None:
                await self._kill(process, finding.kill)
                return f"{KILLED_BY_HOST}{finding.kill}"
            if finding.recycle is not None:
                return await self._recycle(process, STUCK_THREADS, finding.recycle)
            delay = finding.recheck

    async def _recycle(self, process: RunnerProcess, kind: str, reason: str) -> str:
        """Stop the runner gracefully, to be started again (not a crash: see
        :mod:`isoplug.host.restarts`); return ``reason``.

        For its RSS (``recycle_rss``), the calls in flight are let finish first, as a worker
        past Celery's ``max_memory_per_child`` is replaced after its task: the runner stops
        once no call is in flight, or ``call_timeout`` after the decision (then it stops
        anyway, and the log says how many calls that breaks). New calls are still taken
        meanwhile. Stuck worker threads recycle at once: their calls already timed out."""
        if kind == RECYCLE_RSS and self._calls:
            await self._until_idle(process)
            if not process.running:
                # It ended while the calls finished (killed at its memory limit, a crash):
                # that, not the recycle, is what its account says.
                return ""
            if self._commands.pending is not None:
                # A stop or restart came while the calls finished: it ends the runner.
                return await self._end_by_command(process)
        self.recycled = kind
        await self._shut_down(process)
        return reason

    async def _end_by_command(self, process: RunnerProcess) -> str:
        """Stop the runner for the pending command; return "": the account's words for it are
        those of the command that wins, given when the supervisor takes it (a stop sent while
        the runner exits replaces a restart: see Commands.take_naming)."""
        self.ended_by_command = True
        await self._shut_down(process)
        return ""

    async def _until_idle(self, process: RunnerProcess) -> None:
        wait = self._config.call_timeout
        _log.info(
            "runner %s (pid %d): waiting for %d call%s in flight to finish before the recycle "
            "(at most %g s)",
            self.runner_id,
            process.pid,
            self._calls,
            "" if self._calls == 1 else "s",
            wait,
        )
        self._idle = idle = asyncio.get_running_loop().create_future()
        try:
            await self._commands.wait_with((idle, process.exited), wait)
        finally:
            self._idle = None
            idle.cancel()
        if process.running and self._commands.pending is None and self._calls:
            _log.warning(
                "runner %s (pid %d): %d call%s still in flight %g s after the recycle was "
                "decided; recycling it anyway (they fail with PluginUnavailable)",
                self.runner_id,
                process.pid,
                self._calls,
                "" if self._calls == 1 else "s",
                wait,
            )

    async def _check(self, process: RunnerProcess) -> Finding | None:
        """One health check; None if a command or the runner's exit interrupted it."""
        check = asyncio.ensure_future(self.health.check())
        try:
            await self._commands.wait_with((check, process.exited), None)
        finally:
            if not check.done():
                check.cancel()
                await asyncio.gather(check, return_exceptions=True)
        return None if check.cancelled() else check.result()

    async def _lost(self, process: RunnerProcess, what: str) -> str:
        """The runner is going away (the exit follows within moments) or is broken: why it
        ended, once it has."""
        if await process.wait_exit(self._config.health_timeout) or await self._unreaped(process):
            return ""
        _log.error("runner %s (pid %d): %s; killing it", self.runner_id, process.pid, what)
        await self._kill(process, what)
        return f"{KILLED_BY_HOST}{what}"

    async def _unreaped(self, process: RunnerProcess) -> bool:
        """Whether the runner has exited but its zygote did not reap it (see
        :meth:`~isoplug.host.zygote.Zygote.settle_unreaped`), and its exit is known now."""
        zygote = self._zygote
        return zygote is not None and await zygote.settle_unreaped(
            process.pid, self.runner_id, process.wait_exit, self._config.health_timeout
        )

    async def _shut_down(self, process: RunnerProcess) -> None:
        """Ask, then SIGTERM, then SIGKILL; returns once the runner has exited."""
        self.stopping = True
        peer = self.peer

        async def ask() -> None:
            if peer is not None:
                with contextlib.suppress(IsoplugError):
                    await peer.request(SHUTDOWN, timeout=self._config.shutdown_timeout)

        await stop_gracefully(
            process,
            ask if peer is not None else None,
            shutdown_timeout=self._config.shutdown_timeout,
            terminate_timeout=self._config.terminate_timeout,
            name=self.runner_id,
            unreaped=lambda: self._unreaped(process),
        )

    async def _kill(self, process: RunnerProcess, why: str) -> None:
        await process.kill_and_wait(why, self.runner_id, lambda: self._unreaped(process))
