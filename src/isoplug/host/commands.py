"""Stop and restart requests, from a supervisor's callers to the task that drives its runner.

:meth:`~isoplug.host.supervisor.RunnerSupervisor.stop` and ``restart`` send a command; the
supervising task notices it wherever it waits (for the ready report, between health checks,
during a health check, during the backoff before a restart) and takes it once the runner has
exited.

This is where they are ordered. Between a user's stops and restarts the latest request wins.
A user's stop is the last word over every restart the host decides on its own (a new
configuration's, a hot reload's; a crash's backoff ends at a stop too), from the moment it is
asked until the user's restart: :meth:`Commands.may_restart` refuses the host's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterable
from typing import Any

from isoplug.host.host_stage import HostStage
from isoplug.host.status import ExitAccount, PluginUnavailable, Unavailability
from isoplug.loop_closed import end_orphaned_task, outside_any_loop

__all__ = [
    "REPLACED_BY_RELOAD",
    "RESTART",
    "RESTARTED_FOR_CONFIG",
    "STOP",
    "STOPPED_BY_RELOAD",
    "Commands",
    "describe_command",
]

STOP = "stop"
RESTART = "restart"
#: How the exit account of a runner hot reload replaced starts (then why, in brackets).
REPLACED_BY_RELOAD = "replaced by hot reload"
#: How the exit account of a runner restarted for a new configuration its plugin cannot take
#: live (no ``on_config``) starts (then what changed it, in brackets): the host's own restart,
#: which nobody asked for as such.
RESTARTED_FOR_CONFIG = "restarted as its configuration changed"
#: A runner hot reload stopped for good (its plugin folder removed).
STOPPED_BY_RELOAD = "stopped by hot reload"


class Commands:
    """The command pending (the latest sent), and the event that wakes whoever waits for one.
    A command sent before the pending one was taken replaces it: the latest request wins
    (among those :meth:`may_restart` lets through)."""

    def __init__(self) -> None:
        self.pending: str | None = None
        self._wake = asyncio.Event()
        self._later: list[asyncio.Future[None]] = []
        #: A user's stop was asked, and no user's restart since.
        self.user_stop_holds = False
        #: What the pending command's exit account says instead of the words of a user's
        #: request (None: those): the host's own stop, a hot reload replacing the runner,
        #: was asked by nobody.
        self.words: str | None = None
        #: Set for good by the host's close (see :meth:`end_for_good`): a call the runner's
        #: stop ends is told that the host is closing, not that its plugin was stopped.
        self.host_closing = False
        #: The words of the stop that ended the supervision for good (a hot reload's
        #: replacement), kept past :meth:`take`: a call still waiting for the runner to be
        #: ready hears of the replacement after the stop was taken.
        self.final_words: str | None = None

    def end_for_good(self, words: str | None, *, host_closing: bool) -> None:
        """Note why the supervision ends for good, before its last stop is sent: the host
        closes (``host_closing``), or a hot reload replaces the runner (``words``)."""
        self.host_closing = self.host_closing or host_closing
        self.final_words = words

    def stop_by_user(self) -> None:
        """Say that a user asked for a stop: from now on the host restarts nothing on its own
        (see :meth:`may_restart`), even before the stop took effect."""
        self.user_stop_holds = True

    def may_restart(self, *, by_user: bool) -> bool:
        """Whether a restart may be asked now. A user's may, always, and ends a user's stop:
        from then on the host may restart on its own again. The host's own may not while a
        user's stop holds: a stop the user asked while a new configuration was checked or a
        saved file compiled would otherwise be undone by it, the plugin running on."""
        if by_user:
            self.user_stop_holds = False
            return True
        return not self.user_stop_holds

    def send(self, command: str, words: str | None = None) -> None:
        """Send ``command`` (a restart only once :meth:`may_restart` said it may be asked);
        ``words``: why, when it is not a user's request (see :meth:`describe`)."""
        self.pending = command
        self.words = words
        self._wake.set()
        if command == RESTART:
            waiters, self._later = self._later, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def restart_sent(self) -> asyncio.Future[None]:
        """A future done once a restart is sent: what replaces a stop asked before it. A
        second stop does not: it joins the first, and both end when the runner has."""
        future = asyncio.get_running_loop().create_future()
        self._later.append(future)
        return future

    def take(self) -> str | None:
        """The pending command, which is pending no more."""
        command, self.pending, self.words = self.pending, None, None
        self._wake.clear()
        return command

    def take_naming(
        self, account: ExitAccount, *, ended_it: bool
    ) -> tuple[str | None, ExitAccount]:
        """:meth:`take`, and the exit account of the runner ended by a command (``ended_it``)
        with that command's words first in its reason. Named here, not when the runner was
        told to stop: a command sent while it exited (a stop right after a restart) replaces
        the one it was told (the latest request wins, and its words with it)."""
        command = self.pending
        if ended_it and command is not None:
            words = self.describe(command)
            reason = f"{words}; {account.reason}" if account.reason else words
            account = dataclasses.replace(account, reason=reason)
        return self.take(), account

    async def wait(self, timeout: float | None) -> str | None:
        """Wait up to ``timeout`` seconds for a command; the pending one (left pending)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        return self.pending

    async def wait_with(
        self, futures: Iterable[asyncio.Future[Any]], timeout: float | None
    ) -> set[asyncio.Future[Any]]:
        """Wait up to ``timeout`` seconds until one of ``futures`` is done or a command is
        sent; return what is done (empty when the time ran out)."""
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            watched: set[asyncio.Future[Any]] = {*futures, waiter}
            done, _ = await asyncio.wait(
                watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if outside_any_loop():
                end_orphaned_task(waiter)  # its loop closed: it cannot be cancelled there
            else:
                waiter.cancel()
        return done

    def describe(self, command: str) -> str:
        """Why a runner ended, when ``command`` (the pending one) ended it."""
        return self.words if self.words is not None else describe_command(command)

    def lost_call(self, plugin_id: str, method: str) -> PluginUnavailable | None:
        """What a call to ``plugin_id`` under way when its runner was lost raises, if a
        command (the pending one) or the host's close ended the runner (else None). The
        host's close is no stop of the plugin's, and a hot reload's replacement no stop
        either: the plugin runs on, on the new code, and the call may be sent again."""
        if self.host_closing:
            return PluginUnavailable(
                f"plugin {plugin_id!r} was stopped during {method!r}: the host "
                f"{HostStage.CLOSING.value}",
                reason=Unavailability.HOST_NOT_RUNNING,
                plugin_id=plugin_id,
            )
        command = self.pending
        # A replacement's stop may be taken already: the words it ended the supervision with
        # remain.
        words = self.final_words if command is None else self.describe(command)
        if words is None or (command is None and not words.startswith(REPLACED_BY_RELOAD)):
            return None
        reloaded = words.startswith(REPLACED_BY_RELOAD)
        return PluginUnavailable(
            f"plugin {plugin_id!r} was {words} during {method!r}"
            + (": the call may be sent again, to its new runner" if reloaded else ""),
            reason=Unavailability.STOPPED
            if command == STOP and not reloaded
            else Unavailability.RESTARTED,
            plugin_id=plugin_id,
        )

    def not_running(self, plugin_id: str, method: str) -> PluginUnavailable | None:
        """What a call waiting for a runner that will not start again raises, when the
        supervision ended for good for a reason of the host's (else None: the plugin's
        state says why)."""
        if self.host_closing:
            return PluginUnavailable(
                f"cannot call {plugin_id}.{method}: the host {HostStage.CLOSING.value}",
                reason=Unavailability.HOST_NOT_RUNNING,
                plugin_id=plugin_id,
            )
        words = self.final_words
        if words is not None and words.startswith(REPLACED_BY_RELOAD):
            return PluginUnavailable(
                f"cannot call {plugin_id}.{method}: its runner was {words} before it was "
                "ready: the call may be sent again, to its new runner",
                reason=Unavailability.RESTARTED,
                plugin_id=plugin_id,
            )
        return None


def describe_command(command: str) -> str:
    """Why a runner ended, when ``command`` ended it."""
    return "stopped on request" if command == STOP else "restarted on request"
