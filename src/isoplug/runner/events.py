"""The events waiting for each plugin of a runner: one bounded queue per plugin, apart from calls.

The host publishes without waiting (``Host.publish``), so a plugin whose handlers are slower
than the events come falls behind. Its events wait in a queue of its own, at most
``max_queued_events`` (1,024 by default, ``SupervisorConfig.max_queued_events``) holding at
most ``max_queued_event_bytes`` of encoded events (64 MiB by default: a count alone let 150
events of 8 MiB take 1.2 GiB, past a plugin's memory limit); past either, an event for that
plugin is dropped, counted and said (a WARNING naming the plugin, the event, the limit and the
count: the first drop at once, then at most one summary per :data:`DROP_REPORT_INTERVAL`
seconds). An empty queue takes one event whatever its size, so that a byte limit below the
largest event still lets each through while the handlers keep up. The runner's connection is
read all along: a backlog of events used to pause reading, so every call, cancel and shutdown
request of the host waited behind it, for as long as the handlers took.

Each plugin's events are handled one at a time, in order of arrival, by a task that lives while
its queue holds some; plugins of one runner (a group) do not wait for each other's handlers.
:class:`EventBacklog` is the queue (sans-IO), :class:`EventQueues` the runner's queues and
their tasks.

An event still queued when the runner stops is dropped too, counted and said. One that arrives
after that is not counted here: the host, which counts the events it sent, counts every one
that no handler took and the runner did not count as dropped (those it never read, too), and
says so (:mod:`isoplug.host.runner_events`). So the host learns how many each plugin's handlers
took as well as the drops (``PluginInfo.events_dropped``, the OpenTelemetry counter
``isoplug.events.dropped``): every health report carries both, and the runner's last word at a
stop (:data:`~isoplug.control.EVENT_COUNTS`) gives the final ones.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final

import msgspec

from isoplug.control import EventDelivery
from isoplug.log_guard import guarded_logger
from isoplug.logs.loop_reports import LoopReports
from isoplug.logs.report_throttle import Tally
from isoplug.logs.sources import attributed_to
from isoplug.wire import decode_value

if TYPE_CHECKING:
    from isoplug.runner.dispatch import LoadedPlugin

__all__ = [
    "DEFAULT_MAX_QUEUED_EVENTS",
    "DEFAULT_MAX_QUEUED_EVENT_BYTES",
    "DROP_REPORT_INTERVAL",
    "EventBacklog",
    "EventQueues",
]

_log = guarded_logger("isoplug.runner")

DEFAULT_MAX_QUEUED_EVENTS: Final = 1024
DEFAULT_MAX_QUEUED_EVENT_BYTES: Final = 64 * 2**20
#: After a plugin's first dropped event, further drops are said at most this often.
DROP_REPORT_INTERVAL: Final = 10.0


class EventBacklog:
    """The events waiting for one plugin, at most ``limit`` of them and ``byte_limit`` bytes
    (one whatever its size when none waits); counts those it had no room for."""

    __slots__ = ("byte_limit", "bytes", "dropped", "limit", "taken", "waiting")

    def __init__(self, limit: int, byte_limit: int = DEFAULT_MAX_QUEUED_EVENT_BYTES) -> None:
        self.limit = limit
        self.byte_limit = byte_limit
        #: Each event with its encoded size.
        self.waiting: collections.deque[tuple[EventDelivery, int]] = collections.deque()
        #: The encoded size of the events waiting, added.
        self.bytes = 0
        #: Events dropped for want of room, or still waiting at the stop, in all.
        self.dropped = 0
        #: Events handed to the plugin's handlers, in all.
        self.taken = 0

    def room_for(self, size: int) -> str:
        """ "": an event of ``size`` bytes fits; else the limit it would pass."""
        if len(self.waiting) >= self.limit:
            return "max_queued_events"
        if self.waiting and self.bytes + size > self.byte_limit:
            return "max_queued_event_bytes"
        return ""

    def offer(self, delivery: EventDelivery, size: int = 0) -> str:
        """Queue ``delivery``, ``size`` bytes encoded; "" if queued, else (counted as dropped)
        the limit it would have passed."""
        full = self.room_for(size)
        if full:
            self.dropped += 1
            return full
        self.waiting.append((delivery, size))
        self.bytes += size
        return ""

    def take(self) -> EventDelivery | None:
        """The event that waited longest (None: none waits), counted as taken."""
        if not self.waiting:
            return None
        self.taken += 1
        delivery, size = self.waiting.popleft()
        self.bytes -= size
        return delivery

    def drop_waiting(self) -> int:
        """Drop (and count) every event still waiting; return how many."""
        left = len(self.waiting)
        self.dropped += left
        self.waiting.clear()
        self.bytes = 0
        return left


Deliver = Callable[["LoadedPlugin", EventDelivery], Awaitable[None]]


class EventQueues:
    """Every plugin's :class:`EventBacklog` and the task handling it.

    ``plugins`` are the runner's loaded plugins (by id, as they are added); ``deliver`` runs
    one plugin's handlers for one event (failures are its to log)."""

    def __init__(
        self,
        plugins: Mapping[str, LoadedPlugin],
        deliver: Deliver,
        limit: int = DEFAULT_MAX_QUEUED_EVENTS,
        byte_limit: int = DEFAULT_MAX_QUEUED_EVENT_BYTES,
    ) -> None:
        self._plugins = plugins
        self._deliver = deliver
        self.limit = limit
        self.byte_limit = byte_limit
        self._backlogs: dict[str, EventBacklog] = {}
        #: Events dropped per plugin so far (those that dropped none left out). Other threads
        #: read it with ``dict(...)``: one copy under the GIL (the health thread, see
        #: :mod:`isoplug.runner.health`).
        self.drop_counts: dict[str, int] = {}
        #: Events each plugin's handlers took so far (likewise read by other threads).
        self.handle_counts: dict[str, int] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        #: Kinds are "plugin id, event name" of subscriptions only: bounded.
        self._drops = LoopReports(DROP_REPORT_INTERVAL)
        self._stopped = False

    def offer_encoded(self, encoded: msgspec.Raw) -> None:
        """An event from the host as it came (the peer's handler for events, run inline as
        they are read: it never waits): its encoded size is what it weighs in the queues."""
        self.offer(decode_value(encoded, EventDelivery), len(encoded))

    def offer(self, delivery: EventDelivery, size: int = 0) -> None:
        """Queue ``delivery`` (``size`` bytes encoded) for every plugin subscribed to it."""
        if self._stopped:
            # Not counted: the host counts what it sent that no handler took, this included.
            return
        for plugin_id, plugin in self._plugins.items():
            if delivery.event not in plugin.subscriptions:
                continue
            backlog = self._backlogs.get(plugin_id)
            if backlog is None:
                backlog = self._backlogs[plugin_id] = EventBacklog(self.limit, self.byte_limit)
            full = backlog.offer(delivery, size)
            if full:
                self.drop_counts[plugin_id] = backlog.dropped
                self._dropped(plugin, delivery.event, full)
            elif plugin_id not in self._workers:
                self._workers[plugin_id] = asyncio.get_running_loop().create_task(
                    self._work(plugin, backlog), name=f"isoplug-events:{plugin_id}"
                )

    def dropped(self, plugin_id: str) -> int:
        """Events dropped for ``plugin_id`` so far."""
        backlog = self._backlogs.get(plugin_id)
        return 0 if backlog is None else backlog.dropped

    def stop(self) -> list[asyncio.Task[None]]:
        """Deliver nothing more: cancel the handlers running, say what is left undelivered and
        what drops were not said yet; return the tasks to await."""
        self._stopped = True
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel("the runner is shutting down")
        for plugin_id, backlog in self._backlogs.items():
            left = backlog.drop_waiting()
            if left:
                self.drop_counts[plugin_id] = backlog.dropped
                with attributed_to(self._plugins[plugin_id].source):
                    _log.warning(
                        "plugin %r: %d event(s) were not delivered: the runner is shutting down",
                        plugin_id,
                        left,
                    )
        self._drops.close()
        return tasks

    async def _work(self, plugin: LoadedPlugin, backlog: EventBacklog) -> None:
        try:
            while (delivery := backlog.take()) is not None:
                self.handle_counts[plugin.plugin_id] = backlog.taken
                await self._deliver(plugin, delivery)
        finally:
            del self._workers[plugin.plugin_id]

    def _dropped(self, plugin: LoadedPlugin, event: str, full: str) -> None:
        plugin_id = plugin.plugin_id
        behind = _behind(full, self.limit, self.byte_limit)

        def summary(tally: Tally) -> str:
            return (
                f"plugin {plugin_id!r} dropped {tally.events:,} more {event!r} event(s) in "
                f"{tally.seconds:.0f} s: its handlers were still {tally.detail}"
            )

        self._drops.report(
            f"{plugin_id}\0{event}",
            f"plugin {plugin_id!r} dropped 1 {event!r} event: its handlers are {behind}, "
            "slower than the events come; further drops are counted and said at most every "
            f"{DROP_REPORT_INTERVAL:g} s",
            summary=summary,
            emit=functools.partial(_warn_as, plugin.source),
            detail=behind,
        )


def _behind(full: str, limit: int, byte_limit: int) -> str:
    """How far behind the handlers are, by the limit an event would have passed."""
    if full == "max_queued_event_bytes":
        return f"{byte_limit:,} bytes of events behind (max_queued_event_bytes)"
    return f"{limit:,} events behind (max_queued_events)"


def _warn_as(source: str, text: str) -> None:
    # On the plugin's runner logger, as its other runner records are: in a group, the
    # runner's own name would be the group's, not the member's that fell behind.
    with attributed_to(source):
        _log.warning(text)
