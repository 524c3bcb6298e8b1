"""What a supervisor's callers ask of its runner: start it, stop it, restart it, kill it at
once, close the supervision, and wait for what they asked to settle.

A base class of :class:`~isoplug.host.supervisor.RunnerSupervisor` (as
:mod:`isoplug.host.current_runner` is its reading half): these send
:mod:`~isoplug.host.commands` to its supervising task, which drives the runner and takes them
(see :mod:`isoplug.host.supervisor`).
"""

from __future__ import annotations

import asyncio
import logging

from isoplug.host.commands import RESTART, STOP
from isoplug.host.current_runner import CurrentRunner
from isoplug.host.status import PluginState, PluginUnavailable, Unavailability
from isoplug.loop_closed import end_orphaned_task

__all__ = ["RunnerControl"]


class RunnerControl(CurrentRunner):
    """The commanding half of :class:`~isoplug.host.supervisor.RunnerSupervisor`."""

    #: Set by aclose(): no runner is started any more.
    _closed: bool

    async def _supervise(self) -> None:
        """The supervising task's work (the supervisor's)."""
        raise NotImplementedError

    def _set_state(self, state: PluginState, message: str, level: int = logging.INFO) -> None:
        """Say the runner is in ``state`` (the supervisor's)."""
        raise NotImplementedError

    def start(self) -> None:
        """Start supervising (a no-op if already supervising). Raises
        :class:`PluginUnavailable` once closed."""
        self._check_open()
        if self._task is not None and not self._task.done():
            return
        self._commands.take()
        self._set_state(PluginState.STARTING, f"starting runner {self.runner_id}")
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"isoplug-supervisor:{self.runner_id}"
        )
        self._task.add_done_callback(self._forget_cancelled)

    def _forget_cancelled(self, task: asyncio.Task[None]) -> None:
        """Drop a supervision task that was cancelled (its loop ended under an unclosed host):
        on Python 3.12+ its CancelledError's traceback keeps alive every frame that ran the
        loop, up to the application's frame holding the host, which then can never be
        collected and released (see isoplug.host.unclosed)."""
        if task.cancelled() and self._task is task:
            self._task = None

    async def stop(self, *, by_user: bool = False, words: str | None = None) -> None:
        """Stop the runner gracefully (shutdown request, SIGTERM, SIGKILL) and wait for it.
        A FAILED runner stays FAILED (what the host's close leaves shows why), unless
        ``by_user`` (a user's stop: it is STOPPED, and nothing restarts it but a user's
        restart, see :mod:`isoplug.host.commands`). A user's restart asked before the stop
        took effect replaces it (the latest request wins): this returns then, with the runner
        restarting. A second stop asked meanwhile joins the first: both return once the
        runner has exited. ``words``: why its exit account says it ended, for a stop no one
        asked for (a hot reload replacing it); else "stopped on request"."""
        if by_user:
            self._commands.stop_by_user()
        task = self._task
        if task is None or task.done():
            if self.state is not PluginState.FAILED or by_user:
                self._set_state(PluginState.STOPPED, f"runner {self.runner_id} stopped")
            return
        replaced = self._commands.restart_sent()
        self._commands.send(STOP, words)
        try:
            await asyncio.wait({task, replaced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            replaced.cancel()

    async def restart(
        self, *, unless_since: int | None = None, by_user: bool = True, words: str | None = None
    ) -> bool:
        """Replace the runner with a fresh one (also from FAILED or STOPPED); wait for it.

        Plugins that could not be loaded are tried again (their code or configuration may
        have changed since). Returns when the new runner is ready, or failed again. With
        ``unless_since`` (a :attr:`generation`), a runner started after that one is not
        replaced (its predecessor ended and was restarted already): this waits for it.

        Not ``by_user`` (a restart the host decided on its own: a new configuration's, a hot
        reload's), it is not asked once a user asked for a stop, until the user's restart
        (:meth:`~isoplug.host.commands.Commands.may_restart`), nor of a stopped runner;
        ``words``: why, as the exit account says. Returns whether the restart was asked.
        """
        self._check_open()
        if unless_since is not None and self._generation > unless_since:
            await self._wait_settled(after_generation=unless_since)
            return True
        idle = self._task is None or self._task.done()
        if not by_user and idle and self.state is PluginState.STOPPED:
            return False
        if not self._commands.may_restart(by_user=by_user):
            return False
        generation = self._generation
        self.broken.clear()
        if idle:
            self.error = None
            self.start()
        else:
            self._commands.send(RESTART, words)
        await self._wait_settled(after_generation=generation)
        return True

    async def restart_unless_started(self, *, since: RunnerControl) -> None:
        """A user's restart, where ``since`` was this plugin's supervisor: one a hot reload
        made meanwhile and started is waited for, not replaced again."""
        if self is since or self._task is None or self._task.done():
            await self.restart()
        else:
            await self._wait_settled(after_generation=0)

    def kill_now(self, why: str) -> None:
        """Last resort (host cancelled mid-shutdown): SIGKILL the runner's group at once;
        ``why`` goes into its exit account."""
        if self._process is not None:
            self._process.kill(why)

    def release_without_loop(self, why: str) -> None:
        """The host's loop was closed under it: SIGKILL the runner, let its output threads end,
        and end the supervision, which nothing can run any more (see
        :mod:`isoplug.loop_closed`)."""
        self.kill_now(why)
        if self._process is not None:
            self._process.end_capture_without_loop()
        end_orphaned_task(self._task)

    async def wait_ended(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the supervision to end (after :meth:`kill_now`:
        once it has seen the runner's exit and said how it ended)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)

    async def aclose(self, words: str | None = None, *, host_closing: bool = False) -> None:
        """Stop; make sure the supervising task has ended; no runner starts after it (start()
        and restart() raise). Idempotent. ``words``: as :meth:`stop`'s; ``host_closing``: the
        host's close, which the calls it ends are told of."""
        self._closed = True
        self._commands.end_for_good(words, host_closing=host_closing)
        await self.stop(words=words)

    def _check_open(self) -> None:
        if self._closed:
            # A backstop: the host refuses its callers sooner, naming its own state.
            raise PluginUnavailable(
                f"runner {self.runner_id} is closed: its host is closed, or its plugin folder "
                "was removed",
                reason=Unavailability.HOST_NOT_RUNNING,
            )

    async def _wait_settled(self, after_generation: int) -> None:
        """Wait until a runner newer than ``after_generation`` has settled (or supervision
        ended)."""
        settled = (PluginState.READY, PluginState.FAILED, PluginState.STOPPED)
        while self._generation <= after_generation or self.state not in settled:
            if self._task is None or self._task.done():
                return
            changed = self._changed
            await changed.wait()
