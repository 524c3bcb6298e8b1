"""Calls and events to the plugins of a supervised runner: routed to its current process,
waiting for one that is starting, and, when the process is lost mid-call, letting the
supervision account for it before the caller hears of it.

A base class of :class:`~isoplug.host.supervisor.RunnerSupervisor`, whose state it reads
(declared below); the call itself is :func:`isoplug.host.calls.call_runner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

from isoplug.control import EVENT, EventDelivery
from isoplug.errors import ConnectionBroken, ConnectionClosed, MethodNotFound, hidden_from_pytest
from isoplug.host import observers
from isoplug.host.calls import call_runner
from isoplug.host.commands import Commands
from isoplug.host.config import SupervisorConfig
from isoplug.host.life import RunnerLife
from isoplug.host.offers import Offers
from isoplug.host.status import (
    PluginInfo,
    PluginNotReady,
    PluginState,
    PluginUnavailable,
    Unavailability,
)
from isoplug.rpc import Peer
from isoplug.wire.codec import event_message
from isoplug.wire.framing import encode_frame
from isoplug.wire.tracecontext import current_traceparent

__all__ = ["PluginCalls", "check_event_payload"]

#: Left out of a failing test's report (see isoplug.errors.hidden_from_pytest).
__tracebackhide__ = hidden_from_pytest

#: After a call lost its runner, how long it waits at most for the supervision to account for
#: the exit (state, last exit) before raising: milliseconds normally; a runner that closed its
#: connection but lives on is killed only after ``health_timeout``.
_ACCOUNT_WAIT = 1.0


class PluginCalls:
    """The calling half of :class:`~isoplug.host.supervisor.RunnerSupervisor`."""

    runner_id: str
    _config: SupervisorConfig
    state: PluginState
    broken: dict[str, str]
    offers: Offers
    _life: RunnerLife | None
    _commands: Commands
    #: Set, and replaced by a new one, at every change of state.
    _changed: asyncio.Event

    @property
    def _peer(self) -> Peer | None:
        return None if self._life is None else self._life.peer

    if TYPE_CHECKING:

        def info(self, plugin_id: str) -> PluginInfo: ...

    def observed_call(
        self,
        plugin_id: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Awaitable[Any]:
        """:meth:`call` (by :meth:`Host.call` or :meth:`Host.call_with`), told to the observers
        once, however it ends: the one place the metrics count a call."""
        try:
            call = self.call(plugin_id, method, args, kwargs, timeout)
        except MethodNotFound as error:
            # Refused before any call was made (the host knows the plugin's methods): counted
            # all the same. A plugin not ready yet refuses it in the call, which counts it below.
            observers.call_finished(plugin_id, method, 0.0, error)
            raise
        if observers.watching():
            return observers.observed_call(plugin_id, method, call)
        return call

    def call(
        self,
        plugin_id: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Coroutine[Any, Any, Any]:
        """Call ``method`` of ``plugin_id``: the coroutine to await (to a ready runner, that of
        :func:`~isoplug.host.calls.call_runner` itself: one layer less per call). Raises, or
        the coroutine raises, what :meth:`isoplug.Host.call` says."""
        life = self._life
        if (
            self.state is not PluginState.READY
            or life is None
            or life.peer is None
            or plugin_id in self.broken
        ):
            return self._call_once_ready(plugin_id, method, args, kwargs, timeout)
        if not self.offers.has_method(plugin_id, method):
            raise self.offers.method_not_found(plugin_id, method)
        # The timeout as it is: the coroutine starts at once (a deadline read back off the
        # clock cost two clock reads a call).
        return call_runner(
            life,
            plugin_id,
            method,
            args,
            kwargs,
            remaining=timeout,
            commands=self._commands,
            account_lost=self._wait_left,
        )

    async def _call_once_ready(
        self,
        plugin_id: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        """The call of a plugin whose runner is not ready yet: once it is, within ``timeout``
        in all."""
        deadline = None if timeout is None else time.monotonic() + timeout
        await self._wait_ready_for_call(plugin_id, method, timeout)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await self.call(plugin_id, method, args, kwargs, left)

    async def _wait_left(self, life: RunnerLife) -> None:
        """Wait (a moment at most) until ``life`` is no longer the current ready runner."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_ACCOUNT_WAIT):
                while self._life is life and self.state is PluginState.READY:
                    changed = self._changed
                    await changed.wait()

    def publish(self, event: str, payload: Any) -> bool:
        """Send ``event`` if a plugin of this runner subscribes to it; True if sent (each
        subscriber's handlers then get it, or it counts as dropped: see
        :mod:`isoplug.host.runner_events`). Not sent, and dropped, while the connection holds
        more than ``max_queued_event_bytes`` unsent."""
        life = self._life
        peer = None if life is None else life.peer
        if self.state is not PluginState.READY or life is None or peer is None or not peer.is_open:
            return False
        subscribers = self.offers.subscribers(event)
        if not subscribers:
            return False
        unsent = peer.unsent_bytes
        if unsent > self._config.max_queued_event_bytes:
            # Bounds what the host holds for a runner that reads too slowly, and what a call
            # waits behind on the connection.
            life.health.events.note_held_back(
                subscribers, event, unsent, self._config.max_queued_event_bytes, self.runner_id
            )
            return False
        try:
            traceparent, tracestate = current_traceparent()
            peer.notify_nowait(
                EVENT,
                EventDelivery(
                    event=event, payload=payload, traceparent=traceparent, tracestate=tracestate
                ),
            )
        except (ConnectionClosed, ConnectionBroken):
            return False
        life.health.events.note_sent(subscribers)
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
                        ended = self._commands.not_running(plugin_id, method)
                        if ended is not None:
                            raise ended
                        raise PluginUnavailable(
                            f"cannot call {plugin_id}.{method}: the plugin is "
                            f"{info.state.value}" + (f": {info.error}" if info.error else ""),
                            reason=Unavailability.FAILED
                            if info.state is PluginState.FAILED
                            else Unavailability.STOPPED,
                            plugin_id=plugin_id,
                        )
                    changed = self._changed
                    await changed.wait()
        except TimeoutError:
            raise PluginNotReady(
                f"cannot call {plugin_id}.{method}: the plugin was not ready within "
                f"{timeout:g} s (state: {self.state.value})",
                reason=Unavailability.NOT_READY,
                plugin_id=plugin_id,
            ) from None


def check_event_payload(event: str, payload: Any) -> None:
    """Raise what sending ``event`` with ``payload`` to a runner would: a
    :class:`~isoplug.errors.LocalProtocolError` for a payload that does not encode, a
    :class:`~isoplug.errors.FrameTooLarge` for one too large (runners' connections take the
    default frame size)."""
    encode_frame(event_message(EVENT, EventDelivery(event=event, payload=payload)))
