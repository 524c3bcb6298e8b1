"""The events of one runner process, per plugin: those the host sent, and what the runner said
became of them.

``Host.publish`` does not wait for the plugins, so an event may never reach a handler: the
runner drops it (its plugin's queue full, or still queued at a stop: the runner counts those
and says them), or it ends before it read the event (a stop or restart under way when the
event was sent, a crash). The host counts what it sent each plugin; the runner tells how many
its handlers took and how many it dropped (every health report, and its last word at a stop:
:class:`~isoplug.control.EventCounts`). Once the process ended, every event sent that no
handler took counts as dropped (``PluginInfo.events_dropped``): those the runner did not count
are said here, in a WARNING. After a stop, the runner's last word makes that exact; a runner
that ended without it (a crash, a kill) is counted from its last health report, so an event
handled after that report counts as not delivered too, and the WARNING says so.

An event may also never leave the host: ``Host.publish`` sends none to a runner whose
connection already holds more than ``max_queued_event_bytes`` unsent (the runner reads more
slowly than events are published, or not at all: stopped, its loop blocked), lest the host
hold every event for it (150 events of 8 MiB took 1.2 GiB) and a call wait behind them all.
Such an event counts as dropped for each subscriber at once, said in a WARNING (the first at
once, then at most one summary per :data:`HELD_BACK_REPORT_INTERVAL` seconds).

Counts told by the runner are its plugins' word (a plugin could forge them): each is kept
within what the host sent that plugin, so a forged count can hide the plugin's own drops but
never make up others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from isoplug.log_guard import guarded_logger
from isoplug.logs.loop_reports import LoopReports
from isoplug.logs.report_throttle import Tally

__all__ = ["HELD_BACK_REPORT_INTERVAL", "RunnerEvents"]

_log = guarded_logger("isoplug.host")

#: After the first event held back from a runner's plugin, further ones are said at most this
#: often (as the runner says its own drops).
HELD_BACK_REPORT_INTERVAL: Final = 10.0


class RunnerEvents:
    """The events of one runner process (see the module docstring)."""

    __slots__ = ("_dropped", "_handled", "_held_back", "_reports", "_sent", "confirmed")

    def __init__(self) -> None:
        self._sent: dict[str, int] = {}
        self._handled: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        #: Events never sent, the connection too far behind (see note_held_back).
        self._held_back: dict[str, int] = {}
        self._reports = LoopReports(HELD_BACK_REPORT_INTERVAL)
        #: The runner's last word came: its counts are final.
        self.confirmed = False

    def note_sent(self, plugin_ids: Iterable[str]) -> None:
        """One event was handed to the runner for each of ``plugin_ids`` (its subscribers)."""
        sent = self._sent
        for plugin_id in plugin_ids:
            sent[plugin_id] = sent.get(plugin_id, 0) + 1

    def note_held_back(
        self, plugin_ids: Sequence[str], event: str, unsent: int, limit: int, runner_id: str
    ) -> None:
        """One event was not sent to the runner for ``plugin_ids`` (its subscribers): its
        connection held ``unsent`` bytes not sent yet, past ``limit``. Counted as dropped for
        each, and said; call it on the event loop."""
        held = self._held_back
        for plugin_id in plugin_ids:
            held[plugin_id] = held.get(plugin_id, 0) + 1
            self._report_held_back(plugin_id, event, unsent, limit, runner_id)

    def note_told(
        self, dropped: Mapping[str, int], handled: Mapping[str, int], *, final: bool = False
    ) -> None:
        """What the runner told of its plugins' events so far (a health report, or with
        ``final`` its last word): each count kept as the highest told, a counter never going
        back, and only for the plugins the host sent events to."""
        for told, kept in ((dropped, self._dropped), (handled, self._handled)):
            for plugin_id, count in told.items():
                sent = self._sent.get(plugin_id)
                if sent is not None and isinstance(count, int):
                    kept[plugin_id] = min(sent, max(count, kept.get(plugin_id, 0)))
        if final:
            self.confirmed = True

    def dropped(self, plugin_id: str) -> int:
        """The events of ``plugin_id`` the runner said it dropped so far, and those the host
        held back from it."""
        return self._dropped.get(plugin_id, 0) + self._held_back.get(plugin_id, 0)

    def settle(self, runner_id: str) -> dict[str, int]:
        """The runner process ended: the events each plugin did not get (plugin id -> count,
        those at 0 left out), with a WARNING for those the runner did not count itself. From
        now on they are the caller's: this process's counts start again at 0 (they are not
        added twice to those of the runners before it)."""
        self._reports.close()
        counts: dict[str, int] = {}
        for plugin_id in self._sent.keys() | self._held_back.keys():
            sent = self._sent.get(plugin_id, 0)
            told = self._dropped.get(plugin_id, 0)
            lost = max(told, sent - self._handled.get(plugin_id, 0))
            if lost > told:
                _warn_unsaid(plugin_id, runner_id, lost - told, confirmed=self.confirmed)
            lost += self._held_back.get(plugin_id, 0)
            if lost:
                counts[plugin_id] = lost
        self._sent, self._handled, self._dropped, self._held_back = {}, {}, {}, {}
        return counts

    def _report_held_back(
        self, plugin_id: str, event: str, unsent: int, limit: int, runner_id: str
    ) -> None:
        def summary(tally: Tally) -> str:
            return (
                f"plugin {plugin_id!r} dropped {tally.events:,} more {event!r} event(s) in "
                f"{tally.seconds:.0f} s, not sent: its runner {runner_id} still had more than "
                f"{limit:,} bytes unsent on its connection (max_queued_event_bytes)"
            )

        self._reports.report(
            f"{plugin_id}\0{event}",
            f"plugin {plugin_id!r} dropped 1 {event!r} event, not sent: its runner {runner_id} "
            f"has {unsent:,} bytes unsent on its connection, more than {limit:,} "
            "(max_queued_event_bytes): it reads more slowly than events are published; "
            f"further drops are counted and said at most every {HELD_BACK_REPORT_INTERVAL:g} s",
            summary=summary,
            emit=_log.warning,
        )


def _warn_unsaid(plugin_id: str, runner_id: str, count: int, *, confirmed: bool) -> None:
    if confirmed:
        why = "its runner was stopping: they came too late for its handlers"
    else:
        # Its handlers may have taken some since its last report: counted all the same, as
        # the host cannot know (an event counted twice beats one lost unsaid).
        why = (
            "its runner ended without saying which it handled (counted from its last health "
            "report: some may have been handled after it)"
        )
    _log.warning(
        "plugin %r: %d event(s) sent to runner %s were not delivered: %s",
        plugin_id,
        count,
        runner_id,
        why,
    )
